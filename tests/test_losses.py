import math

import torch
import torch.nn.functional as F

from matchnas.train.losses import distillation_loss, fixmatch_loss, labelled_loss, pseudo_labels


def test_pseudo_labels_threshold_and_mask():
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    p = pseudo_labels(logits, tau=0.95)
    assert p.labels.tolist() == [0, 0]
    assert p.mask.tolist() == [1.0, 0.0]
    assert p.mask_rate == 0.5
    assert not p.probs.requires_grad


def test_fixmatch_loss_averages_over_all_unlabelled_images():
    teacher = pseudo_labels(torch.tensor([[10.0, 0.0], [0.0, 0.0]]), tau=0.9)
    strong = torch.tensor([[0.0, 1.0], [3.0, 0.0]])
    expected = F.cross_entropy(strong[:1], torch.tensor([0])) / 2  # one kept image of two
    torch.testing.assert_close(fixmatch_loss(strong, teacher), expected)


def test_fixmatch_loss_is_zero_when_nothing_passes_the_threshold():
    teacher = pseudo_labels(torch.zeros(4, 3), tau=0.95)
    assert fixmatch_loss(torch.randn(4, 3), teacher).item() == 0.0


def test_distillation_is_zero_for_identical_predictions_and_positive_otherwise():
    logits = torch.randn(5, 4)
    probs = torch.softmax(logits, 1)
    assert distillation_loss(logits, probs).abs().item() < 1e-6
    assert distillation_loss(torch.zeros(5, 4), probs).item() > 0


def test_label_smoothing_changes_the_target():
    logits = torch.tensor([[5.0, 0.0]])
    plain = labelled_loss(logits, torch.tensor([0]))
    smoothed = labelled_loss(logits, torch.tensor([0]), smoothing=0.1)
    assert smoothed > plain
    expected = -(0.95 * F.log_softmax(logits, 1)[0, 0] + 0.05 * F.log_softmax(logits, 1)[0, 1])
    assert math.isclose(smoothed.item(), expected.item(), rel_tol=1e-6)
