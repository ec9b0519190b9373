"""The training levers: each does what its setting says, and the defaults change nothing."""

import copy
import json

import pytest
import torch

from matchnas.errors import MatchnasError
from matchnas.experiment import load_experiment
from matchnas.train import loop
from matchnas.checkpoint import FINAL, LATEST
from matchnas.train.levers import MeanTeacher, gradient_snapshot, project_conflicting_students, student_weight, teacher_first
from matchnas.train.step import LossSettings, StepBatch, train_step

TINY = ["train.batch_size=8", "train.warmup_steps=2", "train.recalibration_images=64",
        "data.image_size=32", "data.labels_per_class=3", "data.max_unlabeled=200"]


def _batch(b: int = 6, size: int = 20, classes: int = 5) -> StepBatch:
    g = torch.Generator().manual_seed(0)
    return StepBatch(torch.randn(b, 3, size, size, generator=g), torch.randint(classes, (b,), generator=g),
                     torch.randn(b, 3, size, size, generator=g), torch.randn(b, 3, size, size, generator=g))


def _grads(model, configs, settings, weight=1.0):
    """Gradients of one step of a fresh copy of ``model`` (train mode, dropout seeded)."""
    net = copy.deepcopy(model).train()
    torch.manual_seed(0)
    metrics = train_step(net, configs, _batch(), settings, weight)
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}, metrics


class Stop(Exception):
    """Ends a run mid-way, as a kill would (after its last checkpoint)."""


class Recorder(torch.nn.Module):
    """The supernet, recording the batch size of every forward."""

    def __init__(self, net):
        super().__init__()
        self.net, self.sizes = net, []

    def forward(self, x, config):
        self.sizes.append(x.shape[0])
        return self.net(x, config)


def test_student_weight_is_zero_during_the_warmup_then_ramps_linearly_to_one():
    weights = [student_weight(s, 100, 0.2, 0.2) for s in range(100)]
    assert weights[:20] == [0.0] * 20
    assert 0.0 < weights[20] < weights[30] < weights[39] < 1.0
    assert weights[40:] == [1.0] * 60
    assert [student_weight(s, 100, 0.0, 0.0) for s in range(100)] == [1.0] * 100


def test_teacher_first_keeps_only_the_teacher_while_the_students_weigh_nothing(tiny_space):
    configs = [tiny_space.max(), tiny_space.min()]
    assert teacher_first(configs, 1, 10, 0.2, 0.2) == ([tiny_space.max()], 0.0)
    joined, weight = teacher_first(configs, 2, 10, 0.2, 0.2)
    assert joined == configs and 0.0 < weight < 1.0
    assert teacher_first(configs, 0, 10, 0.0, 0.0) == (configs, 1.0)  # the plain sandwich


def test_warmup_trains_only_the_maxnet_then_the_students_join(tmp_path, monkeypatch):
    real, seen = loop.train_step, []

    def spy(model, configs, batch, settings, student_weight, **levers):
        seen.append((len(configs), student_weight))
        return real(model, configs, batch, settings, student_weight, **levers)

    monkeypatch.setattr(loop, "train_step", spy)
    run = tmp_path / "run"
    loop.train(load_experiment(None, TINY + ["train.steps=4", "train.teacher_warmup=0.5", "train.student_ramp=0.5"]), run)
    assert seen[:2] == [(1, 0.0), (1, 0.0)]  # only the maxnet is forwarded
    assert [n for n, _ in seen[2:]] == [4, 4] and 0.0 < seen[2][1] < seen[3][1] <= 1.0
    index = json.loads(torch.load(run / FINAL, weights_only=True)["selection_index"])
    assert sum(r["score"] for r in index) == 1 + 2 + 4 * (3 + 4)  # untrained students are not indexed
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["student_weight"] for r in rows][:2] == [0.0, 0.0] and "kd" not in rows[0]


def test_students_without_supervised_terms_get_no_label_gradient(tiny_supernet, tiny_space):
    configs = [tiny_space.max(), tiny_space.min()]
    teacher_only, _ = _grads(tiny_supernet, configs[:1], LossSettings(tau=0.0))
    silent, _ = _grads(tiny_supernet, configs, LossSettings(tau=0.0, student_sup_weight=0.0, lambda_kd=0.0))
    supervised, _ = _grads(tiny_supernet, configs, LossSettings(tau=0.0, lambda_kd=0.0))
    for name, grad in teacher_only.items():
        torch.testing.assert_close(silent[name], grad, rtol=0, atol=1e-7)
    assert any(not torch.allclose(supervised[n], g) for n, g in teacher_only.items())


def test_students_distil_on_the_labelled_batch_when_asked(tiny_supernet, tiny_space):
    configs = [tiny_space.max(), tiny_space.min()]
    unlabelled_only = LossSettings(student_sup_weight=0.0)
    _, plain = _grads(tiny_supernet, configs, unlabelled_only)
    _, both = _grads(tiny_supernet, configs, LossSettings(student_sup_weight=0.0, distill_labelled=True))
    assert both["kd"] > plain["kd"] > 0.0  # KL on the labelled batch is added, and is positive


@pytest.mark.parametrize("settings, student_size", [
    (LossSettings(), 3),  # labelled + strong (FixMatch) + weak (distillation)
    (LossSettings(distill_view="strong"), 2),  # no weak-view forward for the students
    (LossSettings(student_sup_weight=0.0), 2),  # labelled + weak: no FixMatch forward
    (LossSettings(student_sup_weight=0.0, distill_view="strong"), 2),
])
def test_students_forward_only_the_views_they_learn_from(tiny_supernet, tiny_space, settings, student_size):
    recorder = Recorder(copy.deepcopy(tiny_supernet).train())
    train_step(recorder, [tiny_space.max(), tiny_space.min(), tiny_space.min()], _batch(b=4), settings)
    assert recorder.sizes == [12, 4 * student_size, 4 * student_size]


def test_projection_removes_only_the_conflicting_component():
    teacher = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])]
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    params[0].grad = teacher[0] + torch.tensor([-2.0, 1.0])  # students: (-2, 1 | 3), conflicting
    params[1].grad = teacher[1] + torch.tensor([3.0])
    cosine = project_conflicting_students(params, teacher)
    assert cosine < 0
    torch.testing.assert_close(params[0].grad, torch.tensor([1.0, 1.0]))  # g_t + (0, 1)
    torch.testing.assert_close(params[1].grad, torch.tensor([3.0]))  # orthogonal to g_t: kept
    params[0].grad = teacher[0] + torch.tensor([2.0, 1.0])  # agreeing students: untouched
    project_conflicting_students(params, teacher)
    torch.testing.assert_close(params[0].grad, torch.tensor([3.0, 1.0]))


def test_projected_students_never_oppose_the_maxnet(tiny_supernet, tiny_space):
    configs = [tiny_space.max(), tiny_space.min()]
    teacher, _ = _grads(tiny_supernet, configs[:1], LossSettings())
    projected, metrics = _grads(tiny_supernet, configs, LossSettings(project_conflicts=True), weight=5.0)
    dot = sum(float(((projected[n] - g) * g).sum()) for n, g in teacher.items())
    assert "conflict_cosine" in metrics and dot >= -1e-6
    assert gradient_snapshot([torch.nn.Parameter(torch.zeros(1))]) == [None]


def test_body_lr_scale_gives_the_pretrained_body_its_own_learning_rate(tiny_supernet):
    experiment = load_experiment(None, ["train.body_lr_scale=0.1", "train.lr=0.02"])
    optimizer, _ = loop.build_optimizer(tiny_supernet, experiment)
    head = {id(p) for p in tiny_supernet.classifier.parameters()}
    for group in optimizer.param_groups:
        is_head = {id(p) for p in group["params"]} <= head
        assert group["initial_lr"] == pytest.approx(0.02 if is_head else 0.002)  # before the warm-up factor
    default, _ = loop.build_optimizer(tiny_supernet, load_experiment(None, ["train.lr=0.02"]))
    assert [g["initial_lr"] for g in default.param_groups] == [0.02, 0.02]  # today's two groups


def test_final_lr_is_the_floor_of_the_cosine_schedule(tiny_supernet):
    experiment = load_experiment(None, ["train.steps=10", "train.warmup_steps=2", "train.final_lr=0.1"])
    optimizer, schedule = loop.build_optimizer(tiny_supernet, experiment)
    for _ in range(10):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.01)


def test_the_mean_teacher_follows_the_weights_with_a_decay_that_warms_up():
    online = torch.nn.Linear(2, 1)
    mean = MeanTeacher(online, decay=0.99)
    start = mean.model.weight.clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    mean.update(online, step=0)  # d = min(0.99, 1/10): the average moves 90% of the way
    torch.testing.assert_close(mean.model.weight, start + 0.9)
    for step in range(1, 1000):
        mean.update(online, step)
    torch.testing.assert_close(mean.model.weight, online.weight)  # a fixed point once caught up
    with torch.no_grad():
        online.weight.add_(1.0)
    mean.update(online, step=10_000)  # d = 0.99 late in the run
    torch.testing.assert_close(mean.model.weight, online.weight - 0.99)
    assert not any(p.requires_grad for p in mean.model.parameters())


def test_the_mean_teacher_gives_the_pseudo_labels_and_the_maxnet_skips_its_weak_view(tiny_supernet, tiny_space):
    batch, classes = _batch(b=4), 5
    sure = torch.zeros(12, classes)  # rows: labelled, strong, weak views
    sure[:8] = 50.0 * torch.eye(classes)[0]  # confident on the labelled and strong views: must not count
    sure[[8, 9], [2, 3]] = 50.0  # confident on the first two weak views only, uniform on the others

    def mean_teacher(x, config):
        assert x.shape[0] == 12 and config == tiny_space.max()  # the maxnet's whole batch
        return sure

    recorder = Recorder(copy.deepcopy(tiny_supernet).train())
    metrics = train_step(recorder, [tiny_space.max(), tiny_space.min()], batch, LossSettings(tau=0.9),
                         mean_teacher=mean_teacher)
    assert metrics["mask_rate"] == 0.5
    assert recorder.sizes == [8, 12]  # maxnet: labelled + strong; student: labelled + strong + weak


@pytest.mark.parametrize("override", ["train.distill_view=both", "train.teacher_warmup=1.5", "train.student_ramp=-0.1",
                                      "train.student_sup_weight=-1", "train.body_lr_scale=-0.5", "train.final_lr=2",
                                      "train.teacher_warmup=0.6", "train.ema_teacher=1"])
def test_bad_lever_values_are_refused(override):
    with pytest.raises(MatchnasError, match=override.split("=")[0].split(".")[1]):
        load_experiment(None, [override, "train.student_ramp=0.5"] if "warmup=0.6" in override else [override])


def test_the_mean_teacher_is_refused_with_a_few_shot_split():
    with pytest.raises(MatchnasError, match="train.ema_teacher needs split.method=none"):
        load_experiment(None, ["train.ema_teacher=0.99", "split.method=gm"])


@pytest.mark.slow
def test_a_run_with_levers_resumes_to_the_same_weights(tmp_path, monkeypatch):
    levers = TINY + ["train.steps=6", "train.checkpoint_every=3", "train.teacher_warmup=0.2", "train.student_ramp=0.3",
                     "train.project_conflicts=true", "train.student_sup_weight=0.5", "train.distill_labelled=true",
                     "train.distill_view=strong", "train.body_lr_scale=0.5", "train.final_lr=0.1",
                     "train.ema_teacher=0.9"]
    loop.train(load_experiment(None, levers), tmp_path / "whole")
    real = loop.train_step

    def stop_after_the_checkpoint(model, configs, batch, settings, **levers):
        if stop_after_the_checkpoint.calls == 4:
            raise Stop
        stop_after_the_checkpoint.calls += 1
        return real(model, configs, batch, settings, **levers)

    stop_after_the_checkpoint.calls = 0
    monkeypatch.setattr(loop, "train_step", stop_after_the_checkpoint)
    with pytest.raises(Stop):
        loop.train(load_experiment(None, levers), tmp_path / "stopped")
    assert torch.load(tmp_path / "stopped" / LATEST, weights_only=True)["step"] == 3
    monkeypatch.setattr(loop, "train_step", real)
    loop.resume(tmp_path / "stopped")
    a = torch.load(tmp_path / "whole" / FINAL, weights_only=True)
    b = torch.load(tmp_path / "stopped" / FINAL, weights_only=True)
    for part in ("model", "ema_teacher"):
        for key, tensor in a[part].items():
            assert torch.equal(tensor, b[part][key]), (part, key)
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]


def test_loss_settings_are_read_from_the_training_config_by_name():
    from dataclasses import fields

    from matchnas.experiment import load_experiment

    t = load_experiment(None, ["train.tau=0.5", "train.lambda_kd=2", "train.distill_view=strong",
                               "train.student_sup_weight=0.25", "train.loss=kd"]).train  # fmt: skip
    settings = LossSettings.from_train_config(t)
    assert (settings.tau, settings.lambda_kd, settings.distill_view) == (0.5, 2.0, "strong")
    assert (settings.student_sup_weight, settings.loss) == (0.25, "kd")
    assert all(getattr(settings, f.name) == getattr(t, f.name) for f in fields(LossSettings))
