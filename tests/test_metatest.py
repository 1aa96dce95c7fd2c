"""Meta-test fan-out over Ray tasks: worker-count invariance and the CI aggregation."""

import math

import numpy as np
import pytest

from fewray.platform.checkpoint import load_checkpoint
from fewray.data.catalog import read_labels
from fewray.data.episodes import EpisodicSampler
from fewray.evaluation.fewshot_accuracy import aggregate
from fewray.platform.metatest import EpisodeSpec, ModelSpec, SplitSpec, chunks, run_metatest, split_inputs, task_images
from conftest import tiny_config


def test_aggregate_is_mean_std_ci95():
    accs = {2: 80.0, 0: 100.0, 1: 90.0}
    mean, std, ci95 = aggregate(accs)
    assert mean == pytest.approx(90.0)
    assert std == pytest.approx(np.std([100.0, 90.0, 80.0]))
    assert ci95 == pytest.approx(1.96 * std / math.sqrt(3))


def test_chunks_cover_every_task_once():
    for n, k in [(10, 3), (2000, 7), (5, 8)]:
        ids = [i for r in chunks(n, k) for i in r]
        assert ids == list(range(n))


@pytest.mark.slow
def test_one_and_two_workers_give_identical_accuracy(trained, omniglot_catalog, ray_local):
    cfg = tiny_config(omniglot_catalog)
    state = load_checkpoint(trained["best_checkpoint"])
    common = dict(model=ModelSpec(cfg.model.model_dump(), state["model"]), data=SplitSpec(cfg.data.root, "val", 1),
                  episodes=EpisodeSpec(ways=5, shots=1, queries=15, num_tasks=300, seed=0), batch_size=1024)
    one = run_metatest(**common, num_workers=1)
    two = run_metatest(**common, num_workers=2)
    assert one.num_workers == 1 and two.num_workers == 2
    assert len(one.task_accuracies) == len(two.task_accuracies) == 300
    assert one.task_accuracies == two.task_accuracies
    assert one.accuracy_mean == two.accuracy_mean
    assert one.ci95 == two.ci95
    # a trained model is far above chance (20%) even after a few steps
    assert one.accuracy_mean > 50.0


@pytest.mark.slow  # 20 + 8 s (before loop / vmap): the not-slow run stays under 3 minutes
@pytest.mark.parametrize(
    "model_cfg",
    [
        # fine-tune: a new linear head trained on each task's support features (150 SGD steps)
        {"type": "Baseline", "backbone": {"type": "Conv4", "in_channels": 1},
         "head": {"type": "LinearHead", "num_classes": 10, "in_channels": 64}},
        # MAML: per-task adaptation of backbone and head on the images (fast weights)
        {"type": "MAML", "backbone": {"type": "Conv4", "in_channels": 1}, "num_inner_steps": 1, "inner_lr": 0.1,
         "head": {"type": "LinearHead", "num_classes": 5, "in_channels": 64}},
    ],
    ids=["Baseline", "MAML"],
)
def test_finetune_and_maml_fan_out_with_worker_count_invariance(model_cfg, trained, omniglot_catalog, ray_local):
    import torch

    from fewray.algorithms import build_classifier

    torch.manual_seed(0)
    state = build_classifier(model_cfg).state_dict()  # a random head on the trained ProtoNet's Conv4
    proto = load_checkpoint(trained["best_checkpoint"])["model"]
    state.update({k: v for k, v in proto.items() if k.startswith("backbone.")})
    common = dict(data=SplitSpec(str(omniglot_catalog), "val", 1), batch_size=1024,
                  episodes=EpisodeSpec(ways=5, shots=1, queries=5, num_tasks=24, seed=0))
    # the tasks of each chunk looped or vectorised (model.task_batching), over 1 or 2 Ray tasks: the same accuracies
    runs = {(b, w): run_metatest(model=ModelSpec({**model_cfg, "task_batching": b}, state), **common, num_workers=w)
            for b in ("loop", "vmap") for w in (1, 2)}
    one = runs["loop", 1]
    assert sorted(one.task_accuracies) == list(range(24))
    for key, run in runs.items():
        assert run.task_accuracies == one.task_accuracies, key
        assert run.accuracy_mean == one.accuracy_mean and run.ci95 == one.ci95, key
    assert one.accuracy_mean > 30.0  # adapting to the support set beats chance (20%)


@pytest.mark.slow  # 17-37 s of Ray fan-out: kept out of the 3-minute "not slow" run
def test_a_few_tasks_embed_only_their_images_with_the_same_accuracies(trained, omniglot_catalog, ray_local):
    labels = read_labels(str(omniglot_catalog), "val")
    assert task_images(labels, [(5, 1, 15, 0)], 300) is None  # most of the split: embed all of it
    ids = task_images(labels, [(5, 1, 15, 0), (5, 5, 15, 0)], 20, "val")  # 1- and 5-shot on one pass
    assert len(ids) < len(labels) / 5 and np.all(np.diff(ids) > 0)
    for shots in (1, 5):
        ep = EpisodicSampler(labels, 5, shots, 15, 0).episode(19)
        assert set(ep.support_idx) | set(ep.query_idx) <= set(ids.tolist())

    cfg = tiny_config(omniglot_catalog)
    state = load_checkpoint(trained["best_checkpoint"])["model"]
    common = dict(model=ModelSpec(cfg.model.model_dump(), state), data=SplitSpec(cfg.data.root, "val", 1),
                  episodes=EpisodeSpec(ways=5, shots=1, queries=15, num_tasks=20, seed=0))
    whole = run_metatest(**common, inputs=split_inputs(common["model"], common["data"]))
    few = run_metatest(**common)  # embeds only the images of its 20 tasks
    assert sorted(few.task_accuracies) == list(range(20))
    assert few.task_accuracies == pytest.approx(whole.task_accuracies)
