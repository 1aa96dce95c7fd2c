"""Scenario: a worker node is removed from a real multi-node Ray cluster in the middle of a meta-test.

Run by tests/test_faults.py in its own process (it owns a ``ray.cluster_utils.Cluster``)::

    python tests/scenarios/metatest_node_loss.py CHECKPOINT CATALOG

Starts a head (0 CPUs: the driver only) and two 1-CPU worker nodes, meta-tests once undisturbed, then
again (4 chunks of tasks on the 2 nodes) while a watcher thread removes the node that runs an evaluation
task as soon as the state API shows one RUNNING; on a loaded machine the state API can lag behind short
chunks, so the first finished chunk (3 still to run, so both nodes are busy) removes a node too if the
watcher has not yet. Prints one JSON line: both results' task ids and accuracies, and which node was
removed when and how.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_tasks

from fewray.platform.checkpoint import load_checkpoint
from fewray.platform.metatest import EpisodeSpec, ModelSpec, SplitSpec, run_metatest


def main(checkpoint: str, catalog: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "dashboard_host": "127.0.0.1"})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    state = load_checkpoint(checkpoint)
    common = dict(model=ModelSpec(state["config"]["model"], state["model"]), data=SplitSpec(catalog, "val", 1),
                  episodes=EpisodeSpec(ways=20, shots=5, queries=15, num_tasks=10000, seed=3), batch_size=512,
                  num_workers=4)
    undisturbed = run_metatest(**common)

    event: dict = {}
    lock = threading.Lock()

    def remove(node, how: str) -> None:
        with lock:
            if not event:
                event.update(node_id=node.node_id, at=time.time(), how=how)
                cluster.remove_node(node)

    def remove_a_busy_node() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not event:
            running = list_tasks(filters=[("func_or_class_name", "=", "_evaluate_chunk"), ("state", "=", "RUNNING")],
                                 raise_on_missing_output=False)
            for t in running:
                for node in workers:
                    if node.node_id == t.node_id:
                        remove(node, "state API: a chunk RUNNING on it")
                        return
            time.sleep(0.2)

    watcher = threading.Thread(target=remove_a_busy_node, daemon=True)
    t0 = time.time()
    watcher.start()
    disturbed = run_metatest(**common, on_progress=lambda n: remove(workers[0], "first chunk finished, 3 to run"))
    watcher.join(5)
    print(json.dumps({
        "removed_node": event.get("node_id"),
        "removed_after_seconds": event["at"] - t0 if event else None,
        "removed_how": event.get("how"),
        "alive_nodes": sum(1 for n in ray.nodes() if n["Alive"]),
        "undisturbed": {"mean": undisturbed.accuracy_mean, "ci95": undisturbed.ci95,
                        "ids": sorted(undisturbed.task_accuracies)},
        "disturbed": {"mean": disturbed.accuracy_mean, "ci95": disturbed.ci95, "num_tasks": disturbed.num_tasks,
                      "ids": sorted(disturbed.task_accuracies), "seconds": disturbed.seconds},
        "same_per_task": undisturbed.task_accuracies == disturbed.task_accuracies,
    }))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])
