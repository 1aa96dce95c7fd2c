"""MAML's meta-batches: the per-task loop and vmap compute the same meta-gradients and meta-test scores, BatchNorm
as the reference implementation, and ``train.meta_batch_size`` streamed by Ray Data and split over DDP ranks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from fewray.algorithms import build_classifier
from fewray.algorithms.utils import batch_norm_batch_stats
from fewray.core.errors import ConfigError

torch.set_num_threads(1)

SMALL = {"type": "ConvNet", "in_channels": 1, "channels": [8, 8, 8]}


def _maml(**kw):
    torch.manual_seed(0)
    return build_classifier({"type": "MAML", "backbone": SMALL,
                             "head": {"type": "LinearHead", "num_classes": 3, "in_channels": 8 * 3 * 3}, **kw})


def _tasks(t=3, ways=3, shots=2, queries=4, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(t, ways * shots, 1, 24, 24, generator=g, dtype=dtype)
    q = torch.rand(t, ways * queries, 1, 24, 24, generator=g, dtype=dtype)
    return s, torch.arange(ways).repeat(t, shots), q, torch.arange(ways).repeat(t, queries)


def _meta_grads(model, batching, s, sl, q, ql):
    model.zero_grad()
    model.task_batching = batching
    model(mode="train", support_img=s, support_label=sl, query_img=q, query_label=ql)["loss"].backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def _reference_meta_grads(model, s, sl, q, ql, steps, lr, first_order):
    """MAML's meta-gradient written out with torch.autograd.grad, one task at a time (the textbook form)."""
    model.zero_grad()
    params = dict(model.named_parameters())

    def logits(p, x):
        return functional_call(model, p, (), {"mode": "logits", "img": x})

    total = 0.0
    with batch_norm_batch_stats(model):
        for si, sli, qi, qli in zip(s, sl, q, ql):
            fast = params
            for _ in range(steps):
                g = torch.autograd.grad(F.cross_entropy(logits(fast, si), sli), list(fast.values()),
                                        create_graph=not first_order)
                fast = {k: v - lr * gi for (k, v), gi in zip(fast.items(), g)}
            total = total + F.cross_entropy(logits(fast, qi), qli)
    (total / len(s)).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("first_order", [False, True])
def test_loop_and_vmap_meta_gradients_agree_with_the_textbook_form(first_order):
    # float64: the paths are the same function, so they agree to rounding; float32 within float tolerance
    model = _maml(num_inner_steps=2, inner_lr=0.3, first_order=first_order).double()
    s, sl, q, ql = _tasks(dtype=torch.float64)
    ref = _reference_meta_grads(model, s, sl, q, ql, 2, 0.3, first_order)
    for batching in ("loop", "vmap"):
        got = _meta_grads(model, batching, s, sl, q, ql)
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-9, atol=1e-12, msg=f"{batching} {k}")
    model = model.float()
    s, sl, q, ql = _tasks()
    loop, vmapped = (_meta_grads(model, b, s, sl, q, ql) for b in ("loop", "vmap"))
    for k in loop:
        torch.testing.assert_close(vmapped[k], loop[k], rtol=1e-3, atol=1e-5, msg=k)


def test_second_order_differs_from_first_order_under_vmap():
    # the fused batch-norm kernel's batched double backward is wrong (functorch #534): vmap runs batch-norm from
    # primitives; without second-order terms this test would pass trivially, so they must show
    s, sl, q, ql = _tasks()
    so = _meta_grads(_maml(num_inner_steps=1, inner_lr=0.5), "vmap", s, sl, q, ql)
    fo = _meta_grads(_maml(num_inner_steps=1, inner_lr=0.5, first_order=True), "vmap", s, sl, q, ql)
    assert not torch.allclose(so["backbone.layers.0.0.weight"], fo["backbone.layers.0.0.weight"], rtol=1e-3)


def test_meta_test_scores_are_identical_for_loop_vmap_and_the_per_task_protocol():
    model = _maml(num_inner_steps=1, inner_lr=0.4, test_num_inner_steps=3)
    s, sl, q, ql = _tasks(t=5, seed=1)
    model.before_meta_test()
    with torch.no_grad():
        scores = {b: model.forward_tasks(s, sl, q, 3) for b in ("loop", "vmap")
                  if not model.before_meta_test({"task_batching": b})}
        per_task = []
        for si, sli, qi in zip(s, sl, q):
            model.before_forward_support()
            model(mode="support", img=si, label=sli)
            per_task.append(model(mode="query", img=qi))
    torch.testing.assert_close(scores["vmap"], scores["loop"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.stack(per_task), scores["loop"])
    assert torch.equal(scores["vmap"].argmax(-1), scores["loop"].argmax(-1))  # identical accuracies
    with pytest.raises(ConfigError, match="task_batching 'gpu'"):
        model.before_meta_test({"task_batching": "gpu"})


def test_batch_norm_uses_each_tasks_batch_statistics_and_never_its_running_ones():
    model = _maml(num_inner_steps=1, inner_lr=0.4)
    bn = model.backbone.layers[0][1]
    bn.running_mean.fill_(5.0)  # would wreck any forward that read them
    state = {k: v.clone() for k, v in model.state_dict().items()}
    s, sl, q, ql = _tasks()
    for batching in ("loop", "vmap"):
        model.train()
        train_loss = float(_forward_loss(model, batching, s, sl, q, ql))
        model.eval()
        assert float(_forward_loss(model, batching, s, sl, q, ql)) == pytest.approx(train_loss, rel=1e-6)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert bn.track_running_stats and not bn.training and "forward" not in bn.__dict__  # restored


def _forward_loss(model, batching, s, sl, q, ql):
    model.task_batching = batching
    return model(mode="train", support_img=s, support_label=sl, query_img=q, query_label=ql)["loss"].detach()


def test_a_metric_model_averages_the_episodes_of_a_meta_batch():
    torch.manual_seed(0)
    model = build_classifier({"type": "ProtoNet", "backbone": SMALL, "head": {"type": "PrototypeHead"}})
    s, sl, q, ql = _tasks()
    out = model(mode="train", support_img=s, support_label=sl, query_img=q, query_label=ql)
    each = [model(mode="train", support_img=a, support_label=b, query_img=c, query_label=d)
            for a, b, c, d in zip(s, sl, q, ql)]
    torch.testing.assert_close(out["loss"], torch.stack([e["loss"] for e in each]).mean())
    torch.testing.assert_close(out["accuracy"], torch.stack([e["accuracy"] for e in each]).mean())


def test_fine_tune_heads_give_the_same_scores_looped_and_vectorised():
    torch.manual_seed(0)
    model = build_classifier({"type": "Baseline", "backbone": SMALL,
                              "head": {"type": "LinearHead", "num_classes": 10, "in_channels": 72},
                              "finetune_steps": 20})
    g = torch.Generator().manual_seed(0)
    sf, qf = torch.randn(4, 6, 72, generator=g), torch.randn(4, 9, 72, generator=g)
    sl = torch.arange(3).repeat(4, 2)
    out = {}
    for batching in ("loop", "vmap"):
        model.before_meta_test({"task_batching": batching})
        out[batching] = model.forward_tasks(sf, sl, qf, 3)
    torch.testing.assert_close(out["vmap"], out["loop"], rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="unknown task_batching 'gpu'"):
        build_classifier({"type": "Baseline", "backbone": SMALL, "task_batching": "gpu",
                          "head": {"type": "LinearHead", "num_classes": 10, "in_channels": 72}})


def test_meta_batch_rows_stack_consecutive_episodes(omniglot_catalog):
    from fewray.data.builders import EpisodeBuilder

    kw = dict(root=str(omniglot_catalog), split="train", channels=1, ways=5, shots=1, queries=2, seed=3)
    one, four = EpisodeBuilder(**kw), EpisodeBuilder(**kw, tasks_per_row=4)
    rows = four({"id": np.array([2, 3])})
    assert rows["support_img"].shape[:2] == (2, 4) and rows["episode_id"].tolist() == [[8, 9, 10, 11],
                                                                                          [12, 13, 14, 15]]
    single = one({"id": np.arange(8, 16)})
    for key in single:
        assert np.array_equal(rows[key].reshape(single[key].shape), single[key]), key
    with pytest.raises(ValueError, match="tasks_per_row"):
        EpisodeBuilder(**kw, tasks_per_row=0)


def test_meta_batch_config_errors(omniglot_catalog):
    from conftest import tiny_config

    cfg = tiny_config(omniglot_catalog, "train.meta_batch_size=4", "train.num_workers=2")
    assert cfg.train.tasks_per_worker == 2
    with pytest.raises(ConfigError, match=r"train.meta_batch_size \(3\) must be a multiple of train.num_workers \(2\)"):
        tiny_config(omniglot_catalog, "train.meta_batch_size=3", "train.num_workers=2")
    with pytest.raises(ConfigError, match="train.meta_batch_size applies to episodic meta-training; Baseline"):
        tiny_config(omniglot_catalog, "train.meta_batch_size=4", "model.type=Baseline",
                    "model.head={type: LinearHead, num_classes: 10}")
    with pytest.raises(ConfigError, match="meta_batch_size"):
        tiny_config(omniglot_catalog, "train.meta_batch_size=0")


@pytest.mark.slow  # two Ray Data streaming splits: 23 s (+ 11 s of setup)
def test_two_ddp_ranks_share_each_meta_batch(omniglot_catalog, ray_local):
    """A meta-batch of 4 over 2 ranks: through Ray Data's real streaming_split each rank's row holds 2 episodes, and
    the ranks together train on exactly the episodes one worker would (step ``s``: episodes ``4s .. 4s+3``)."""
    from conftest import split_rows
    from fewray.platform.streaming import episode_dataset

    def episodes(workers: int, steps: int = 3) -> list[list[int]]:
        ds = episode_dataset(str(omniglot_catalog), "train", 1, 5, 1, 2, 0, 0, steps * workers,
                             tasks_per_row=4 // workers)
        return split_rows(ds, workers, lambda batch: np.asarray(batch["episode_id"][0]).reshape(-1).tolist())

    one, two = episodes(1), episodes(2)
    assert sorted(one) == [[4 * s + i for i in range(4)] for s in range(3)]
    assert all(len(r) == 2 for r in two)
    assert sorted(e for r in two for e in r) == list(range(12))


@pytest.mark.slow
def test_maml_meta_batches_train_with_2_ddp_workers_and_log_tasks_per_second(omniglot_catalog, ray_local, tmp_path):
    """A real run: Ray Data streams meta-batches of 4 episodes, 2 Ray Train (DDP) ranks take 2 each per step, the
    rate MLflow logs counts the meta-batch's episodes, and the best checkpoint meta-tests."""
    from mlflow.tracking import MlflowClient

    from conftest import tiny_config
    from fewray.platform.train import run_metatrain

    cfg = tiny_config(omniglot_catalog, "model.type=MAML", "model.head={type: LinearHead, num_classes: 5}",
                      "model.num_inner_steps=1", "model.inner_lr=0.4", "train.ways=5", "train.queries=2",
                      "train.num_workers=2", "train.meta_batch_size=4", "train.num_steps=6", "train.val_interval=6",
                      "train.log_interval=3", "val.ways=5", "val.num_tasks=10", "tracking.experiment=meta_batch")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = run_metatrain(cfg, tmp_path / "out", tracking_uri=uri)
    client = MlflowClient(uri)
    run = client.get_run(res["mlflow_run_id"])
    assert run.data.params["train.meta_batch_size"] == "4"
    rates = client.get_metric_history(res["mlflow_run_id"], "episodes_per_second")
    losses = client.get_metric_history(res["mlflow_run_id"], "loss")
    assert [m.step for m in rates] == [3, 6] and all(m.value > 0 for m in rates)
    seen = client.get_metric_history(res["mlflow_run_id"], "episodes_seen")
    assert [(m.step, m.value) for m in seen] == [(3, 12.0), (6, 24.0)]  # steps x the meta-batch of 4
    assert all(np.isfinite(m.value) for m in losses)
    assert 0.0 <= res["best_val_accuracy_mean"] <= 100.0


def test_the_runtime_keeps_maml_weights_contiguous_and_other_models_channels_last():
    from fewray.platform.features import channels_last

    maml = channels_last(_maml())
    proto = channels_last(build_classifier({"type": "ProtoNet", "backbone": SMALL, "head": {"type": "PrototypeHead"}}))
    # (a 1-channel first conv is both layouts at once)
    conv = [p for p in maml.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert conv and all(p.is_contiguous() for p in conv)
    conv = [p for p in proto.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert conv and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in conv)
