"""The three tasks against the Task contract, on index rows of the real FSDD recordings.

Classification reads the spoken digit; multi-label reads 0/1 columns derived from it (even, odd,
small); regression reads each recording's real duration in milliseconds (hundreds) and its digit.
"""

import json
import math

import numpy as np
import pytest
import soundfile
import torch
from torch import nn

from tympan import components
from tympan.config.presets import load_preset
from tympan.config.schema import Component
from tympan.errors import DataError
from tympan.postprocess import read_confusion
from tympan.targets import resolve_target
from tympan.tasks import Classification, MultiLabel, Regression

SPLITS = {"george": "train", "jackson": "train", "yweweler": "dev", "lucas": "test"}


@pytest.fixture(scope="session")
def fsdd_rows(fsdd_mirror) -> dict[str, list[dict[str, str]]]:
    """Index rows per split, as the dataset writes them (strings), for takes 0-9 of four speakers."""
    rows: dict[str, list[dict[str, str]]] = {"train": [], "dev": [], "test": []}
    for path in sorted((fsdd_mirror / "fsdd" / "recordings").glob("*.wav")):
        digit, speaker, take = path.stem.split("_")
        if speaker not in SPLITS or int(take) >= 10:
            continue
        n = int(digit)
        rows[SPLITS[speaker]].append(
            {
                "path": f"recordings/{path.name}",
                "split": SPLITS[speaker],
                "label": digit,
                "even": str(int(n % 2 == 0)),
                "odd": "1.0" if n % 2 else "0.0",  # the float spelling is accepted too
                "small": str(int(n < 3)),
                "duration_ms": f"{soundfile.info(path).duration * 1000:.3f}",
                "digit": digit,
            }
        )
    return rows


def fit_linear(task, targets: np.ndarray, steps: int = 60) -> tuple[float, float, torch.Tensor]:
    """First and last loss of a linear model trained on features that carry the targets (plus
    noise), and its final outputs. One thread: a model this small only waits on a second one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_linear(task, targets, steps)
    finally:
        torch.set_num_threads(threads)


def _fit_linear(task, targets: np.ndarray, steps: int) -> tuple[float, float, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    soft = task.soft(torch.from_numpy(targets))
    features = torch.cat([soft, torch.randn(len(soft), 4, generator=generator)], dim=1)
    torch.manual_seed(0)
    model = nn.Linear(features.shape[1], task.n_outputs)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = task.loss(model(features), torch.from_numpy(targets))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1], model(features).detach()


def roundtrip(task, fresh):
    """`fresh` (an unfitted task of the same config) loaded with `task`'s state through JSON."""
    return fresh.load_state(json.loads(json.dumps(task.state())))


# ---------------------------------------------------------------- classification


def test_classification_fit_encode_state(fsdd_rows):
    task = Classification(["label"]).fit(fsdd_rows["train"])
    assert task.labels == [str(d) for d in range(10)] and task.n_outputs == 10
    dev = task.encode(fsdd_rows["dev"], "dev")
    assert dev.dtype == np.int64 and dev.tolist() == [int(r["label"]) for r in fsdd_rows["dev"]]
    again = roundtrip(task, Classification(["label"]))
    assert again.labels == task.labels and np.array_equal(again.encode(fsdd_rows["dev"], "dev"), dev)
    assert task.summary() == {
        "name": "classification",
        "tracking_metric": "accuracy",
        "direction": "max",
        "headline": ["accuracy", "uar", "macro_f1", "weighted_f1"],
    }


def test_classification_labels_sort_as_strings():
    rows = [{"label": v} for v in ("10", "9", "b", "A")]
    assert Classification(["label"]).fit(rows).labels == ["10", "9", "A", "b"]


def test_classification_learns_and_decodes(fsdd_rows):
    task = Classification(["label"]).fit(fsdd_rows["train"])
    targets = task.encode(fsdd_rows["train"], "train")
    first, last, outputs = fit_linear(task, targets)
    assert first == pytest.approx(math.log(10), abs=0.5) and last < first / 4
    scores = task.scores(outputs).numpy()
    assert np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    assert task.metrics(scores, targets)["accuracy"] == 1.0
    decoded = task.decode(scores)
    assert decoded["label"].tolist() == [r["label"] for r in fsdd_rows["train"]]
    assert decoded["probabilities"].dtype == np.float32 and decoded["probabilities"].shape == (len(targets), 10)
    rows = task.rows(decoded)
    assert list(rows[0]) == ["label", *(f"prob_{d}" for d in range(10))]
    assert isinstance(rows[0]["label"], str) and isinstance(rows[0]["prob_0"], float)


def test_classification_loss_values_smoothing_and_soft_targets():
    task = Classification(["label"], label_smoothing=0.2).load_state({"labels": ["a", "b", "c"], "class_weights": None})
    outputs = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    hard = torch.tensor([0, 2])
    log_p = torch.log_softmax(outputs, dim=1)
    nll = -(log_p[0, 0] + log_p[1, 2]) / 2
    assert float(task.loss(outputs, hard, train=False)) == pytest.approx(float(nll), abs=1e-6)
    smoothed = 0.8 * nll - 0.2 * log_p.mean(dim=1).mean()  # smoothing only when training
    assert float(task.loss(outputs, hard, train=True)) == pytest.approx(float(smoothed), abs=1e-6)
    mixed = torch.tensor([[0.7, 0.0, 0.3], [0.0, 0.5, 0.5]])
    expected = -(mixed * log_p).sum(dim=1).mean()
    assert float(task.loss(outputs, mixed, train=False)) == pytest.approx(float(expected), abs=1e-6)
    assert task.soft(hard).tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


def test_classification_balanced_class_weights():
    rows = [{"label": v} for v in "aaaaaabbc"]  # 6, 2, 1 of 9
    task = Classification(["label"], class_weights="balanced").fit(rows)
    assert task.state()["class_weights"] == pytest.approx([9 / 18, 9 / 6, 9 / 3])
    assert Classification(["label"]).fit(rows).state()["class_weights"] is None
    outputs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.3, 0.0, 0.2]])
    hard = torch.tensor([0, 1, 2])
    nll = -torch.log_softmax(outputs, dim=1)[[0, 1, 2], [0, 1, 2]]
    weights = torch.tensor([0.5, 1.5, 3.0])
    assert float(task.loss(outputs, hard, train=False)) == pytest.approx(float((weights * nll).sum() / 5), abs=1e-6)
    # one-hot soft targets weigh a batch exactly as their class indices do, smoothing included
    smoothing = Classification(["label"], label_smoothing=0.1, class_weights="balanced").fit(rows)
    assert float(smoothing.loss(outputs, smoothing.soft(hard))) == pytest.approx(float(smoothing.loss(outputs, hard)))


def test_classification_metrics_by_hand():
    task = Classification(["label"]).load_state({"labels": ["a", "b", "c"], "class_weights": None})
    targets = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 2, 2, 0])
    scores = np.eye(3, dtype=np.float32)[predicted]
    metrics = task.metrics(scores, targets)
    # recalls a 3/4, b 1/2, c 1/2; precisions a 3/4, b 1/2, c 1/2, so F1 equals recall per class
    assert metrics["accuracy"] == pytest.approx(5 / 8)
    assert metrics["uar"] == metrics["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1 / 2) / 3)
    assert metrics["f1_a"] == pytest.approx(3 / 4) and metrics["f1_b"] == metrics["f1_c"] == pytest.approx(1 / 2)
    assert metrics["macro_f1"] == pytest.approx((3 / 4 + 1 / 2 + 1 / 2) / 3)
    assert metrics["weighted_f1"] == pytest.approx((4 * 3 / 4 + 2 * 1 / 2 + 2 * 1 / 2) / 8)
    assert task.is_better(0.7, 0.6) and not task.is_better(0.5, 0.6) and task.is_better(0.1, None)
    # UAR averages the recall of the classes present, as balanced accuracy always did: c is absent
    absent = task.metrics(np.eye(3, dtype=np.float32)[[0, 2, 1, 1]], np.array([0, 0, 1, 1]))
    assert absent["uar"] == absent["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)


def test_classification_plots(tmp_path):
    task = Classification(["label"]).load_state({"labels": ["no", "yes"], "class_weights": None})
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    task.plots(scores, np.array([0, 1, 1]), tmp_path / "plots", "dev")
    assert (tmp_path / "plots" / "confusion_dev.png").stat().st_size > 0
    labels, counts = read_confusion(tmp_path, "dev")  # what postprocess sums over seeds
    assert labels == ["no", "yes"] and counts.tolist() == [[1, 0], [1, 1]]


def test_classification_bad_input(fsdd_rows):
    task = Classification(["label"]).fit(fsdd_rows["train"])
    row = {**fsdd_rows["dev"][3], "label": "eleven"}
    with pytest.raises(DataError, match=r"dev, row 2 \(recordings/.*\.wav\): label 'eleven'.*0, 1, 2, 3"):
        task.encode([fsdd_rows["dev"][0], row], "dev")
    with pytest.raises(DataError, match="test: no target column 'label'"):
        task.encode([{k: v for k, v in r.items() if k != "label"} for r in fsdd_rows["test"]], "test")
    with pytest.raises(DataError, match="train: no target column 'digit_name'"):
        Classification(["digit_name"]).fit(fsdd_rows["train"])
    with pytest.raises(DataError, match="at least two labels"):
        Classification(["label"]).fit([r for r in fsdd_rows["train"] if r["label"] == "3"])
    with pytest.raises(RuntimeError, match="not fitted"):
        Classification(["label"]).encode(fsdd_rows["dev"], "dev")


@pytest.mark.parametrize(
    ("state", "key"),
    [
        ({"labels": "0123"}, "labels"),
        ({"labels": ["0", "0"], "class_weights": None}, "labels"),
        ({"labels": ["0", "1"]}, "class_weights"),
        ({"labels": ["0", "1"], "class_weights": [1.0]}, "class_weights"),
        ({"labels": ["0", "1"], "class_weights": [1.0, -2.0]}, "class_weights"),
    ],
)
def test_classification_tampered_state(state, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        Classification(["label"]).load_state(state)


# ---------------------------------------------------------------- multi-label

CLASSES = ["even", "odd", "small"]


def test_multilabel_fit_encode_state(fsdd_rows):
    task = MultiLabel(CLASSES, threshold=0.4).fit(fsdd_rows["train"])
    encoded = task.encode(fsdd_rows["dev"], "dev")
    assert encoded.dtype == np.float32 and encoded.shape == (len(fsdd_rows["dev"]), 3)
    first = fsdd_rows["dev"][0]  # digit 0: even and small
    assert first["label"] == "0" and encoded[0].tolist() == [1.0, 0.0, 1.0]
    assert task.state() == {"classes": CLASSES, "thresholds": [0.4, 0.4, 0.4]}
    task.thresholds = [0.3, 0.5, 0.7]
    assert roundtrip(task, MultiLabel(CLASSES)).thresholds == [0.3, 0.5, 0.7]
    assert task.summary()["tracking_metric"] == "mAP" and task.direction == "max"


def test_multilabel_learns_and_decodes(fsdd_rows):
    task = MultiLabel(CLASSES).fit(fsdd_rows["train"])
    targets = task.encode(fsdd_rows["train"], "train")
    first, last, outputs = fit_linear(task, targets)
    assert first == pytest.approx(math.log(2), abs=0.3) and last < first / 4
    scores = task.scores(outputs).numpy()
    assert task.metrics(scores, targets) == {"mAP": 1.0, "micro_f1": 1.0, "macro_f1": 1.0}
    decoded = task.decode(scores)
    assert decoded["labels"][0] == "even;small" and decoded["labels"][20] == "odd;small"  # digits 0 and 1
    rows = task.rows(decoded)
    assert list(rows[0]) == ["labels", "prob_even", "prob_odd", "prob_small"]


def test_multilabel_loss_and_decode_values():
    task = MultiLabel(["a", "b"], threshold=0.5)
    outputs = torch.zeros(2, 2)
    assert float(task.loss(outputs, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))) == pytest.approx(math.log(2))
    soft = torch.tensor([[0.3, 0.7], [1.0, 0.0]])  # mixed by MixUp
    logits = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
    by_hand = -(soft * torch.log(torch.sigmoid(logits)) + (1 - soft) * torch.log(1 - torch.sigmoid(logits))).mean()
    assert float(task.loss(logits, soft)) == pytest.approx(float(by_hand), abs=1e-6)
    decoded = task.decode(np.array([[0.2, 0.4], [0.5, 0.9]], dtype=np.float32))
    assert decoded["labels"].tolist() == ["", "a;b"]  # at or above the threshold


def test_multilabel_metrics_by_hand():
    task = MultiLabel(["a", "b", "c"])
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=np.float32)  # c has no positives
    scores = np.array([[0.9, 0.2, 0.1], [0.6, 0.8, 0.7], [0.4, 0.3, 0.2], [0.1, 0.9, 0.3]], dtype=np.float32)
    metrics = task.metrics(scores, targets)
    # a: ranked 0.9 (+), 0.6 (-), 0.4 (+) -> AP = (1 + 2/3) / 2; b: 0.9 (-), 0.8 (+), 0.3 (+) -> (1/2 + 2/3) / 2
    assert metrics["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 2 + 2 / 3) / 2) / 2)
    # at 0.5: a predicted for rows 0, 1 (tp 1, fp 1, fn 1); b for 1, 3 (tp 1, fp 1, fn 1); c for 1 (fp 1)
    assert metrics["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 3 + 2))
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)


def test_multilabel_tune_thresholds():
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    scores = np.array([[0.3, 0.1], [0.25, 0.2], [0.1, 0.9], [0.2, 0.6]], dtype=np.float32)
    fixed = MultiLabel(["a", "b"])
    assert fixed.tune(scores, targets).thresholds == [0.5, 0.5]  # without tune_thresholds nothing changes
    tuned = MultiLabel(["a", "b"], tune_thresholds=True)
    before = tuned.metrics(scores, targets)["macro_f1"]
    tuned.tune(scores, targets)
    assert tuned.thresholds[0] == pytest.approx(0.25) and tuned.metrics(scores, targets)["macro_f1"] == 1.0 > before
    assert roundtrip(tuned, MultiLabel(["a", "b"])).thresholds == tuned.thresholds


def test_multilabel_plots(tmp_path):
    task = MultiLabel(["a", "b"])
    targets = np.array([[1, 0], [1, 0], [0, 0]], dtype=np.float32)
    scores = np.array([[0.9, 0.1], [0.2, 0.3], [0.4, 0.2]], dtype=np.float32)
    task.plots(scores, targets, tmp_path, "test")
    assert (tmp_path / "ap_test.png").stat().st_size > 0
    lines = (tmp_path / "ap_test.csv").read_text().splitlines()
    assert lines[0] == "class,ap,positives" and lines[2] == "b,,0"
    assert float(lines[1].split(",")[1]) == pytest.approx((1 + 2 / 3) / 2)


def test_multilabel_bad_input(fsdd_rows):
    task = MultiLabel(CLASSES)
    row = fsdd_rows["train"][12]
    with pytest.raises(DataError, match=r"train, row 2 \(recordings/.*\): column 'odd' holds 'yes', not 0 or 1"):
        task.fit([fsdd_rows["train"][0], {**row, "odd": "yes"}])
    none_set = {**row, "even": "0", "odd": "0", "small": "0"}
    with pytest.raises(DataError, match=rf"dev, row 1 \({none_set['path']}\): no label set"):
        task.encode([none_set], "dev")
    with pytest.raises(DataError, match="no target column 'loud'"):
        MultiLabel(["even", "loud"]).fit(fsdd_rows["train"])


@pytest.mark.parametrize(
    ("state", "key"),
    [
        ({"thresholds": [0.5, 0.5]}, "classes"),
        ({"classes": ["a", "c"], "thresholds": [0.5, 0.5]}, "classes"),
        ({"classes": ["a", "b"], "thresholds": [0.5]}, "thresholds"),
        ({"classes": ["a", "b"], "thresholds": [0.5, 1.5]}, "thresholds"),
        ({"classes": ["a", "b"], "thresholds": [0.5, "0.5"]}, "thresholds"),
    ],
)
def test_multilabel_tampered_state(state, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        MultiLabel(["a", "b"]).load_state(state)


# ---------------------------------------------------------------- regression

TARGETS = ["duration_ms", "digit"]


def test_regression_scales_to_order_one_and_back(fsdd_rows):
    task = Regression(TARGETS).fit(fsdd_rows["train"])
    original = np.array([[float(r[t]) for t in TARGETS] for r in fsdd_rows["dev"]])
    assert 200 < original[:, 0].mean() < 1000  # real durations, in the hundreds of ms
    train = task.encode(fsdd_rows["train"], "train")
    assert train.dtype == np.float32 and np.allclose(train.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(train.std(axis=0), 1, atol=1e-5)
    encoded = task.encode(fsdd_rows["dev"], "dev")
    assert np.abs(encoded).max() < 5
    back = task.scores(torch.from_numpy(encoded)).numpy()
    assert back.dtype == np.float32 and np.allclose(back, original, rtol=0, atol=1e-4)
    again = roundtrip(task, Regression(TARGETS))
    assert np.array_equal(again.encode(fsdd_rows["dev"], "dev"), encoded)
    minmax = Regression(TARGETS, scaling="minmax").fit(fsdd_rows["train"]).encode(fsdd_rows["train"], "train")
    assert minmax.min() == 0.0 and minmax.max() == pytest.approx(1.0)
    none = Regression(TARGETS, scaling="none").fit(fsdd_rows["train"]).encode(fsdd_rows["dev"], "dev")
    assert np.allclose(none, original, atol=1e-4)


def test_regression_learns_and_decodes(fsdd_rows):
    task = Regression(TARGETS).fit(fsdd_rows["train"])
    targets = task.encode(fsdd_rows["train"], "train")
    first, last, outputs = fit_linear(task, targets)
    assert last < first / 4
    decoded = task.decode(task.scores(outputs).numpy())
    assert set(decoded) == set(TARGETS) and decoded["duration_ms"].dtype == np.float32
    true = np.array([float(r["duration_ms"]) for r in fsdd_rows["train"]])
    assert np.abs(decoded["duration_ms"] - true).mean() < 0.1 * true.mean()  # in milliseconds again
    rows = task.rows(decoded)
    assert list(rows[0]) == TARGETS and isinstance(rows[0]["duration_ms"], float)
    assert task.metrics(task.scores(outputs).numpy(), targets)["ccc"] > 0.9


def test_regression_losses_by_hand():
    state = {"targets": ["y"], "center": [0.0], "scale": [1.0]}
    targets = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    outputs = torch.tensor([[1.5], [2.0], [2.0], [5.0]])
    assert float(Regression(["y"], loss="mse").load_state(state).loss(outputs, targets)) == pytest.approx(2.25 / 4)
    assert float(Regression(["y"], loss="mae").load_state(state).loss(outputs, targets)) == pytest.approx(2.5 / 4)
    ccc = Regression(["y"], loss="ccc").load_state(state)
    assert float(ccc.loss(targets, targets)) == pytest.approx(0.0, abs=1e-6)
    assert float(ccc.loss(-targets + 5, targets)) == pytest.approx(2.0, abs=1e-6)  # perfectly discordant
    assert torch.isfinite(ccc.loss(outputs[:1], targets[:1]))  # a batch of one clip


def test_regression_metrics_by_hand():
    task = Regression(["a", "b"], scaling="none").load_state({"targets": ["a", "b"], "center": [0, 0], "scale": [1, 1]})
    targets = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]], dtype=np.float32)
    scores = np.array([[2.0, 1.0], [2.0, 2.0], [4.0, 3.0]], dtype=np.float32)
    m = task.metrics(scores, targets)
    assert m["mse_a"] == pytest.approx(2 / 3) and m["mae_a"] == pytest.approx(2 / 3)
    assert m["pearson_a"] == pytest.approx(np.corrcoef([1, 2, 3], [2, 2, 4])[0, 1])
    # a: means 2 and 8/3, variances 2/3 and 8/9, covariance 2/3 -> 2 (2/3) / (2/3 + 8/9 + 4/9)
    assert m["ccc_a"] == pytest.approx((4 / 3) / (2 / 3 + 8 / 9 + 4 / 9))
    assert m["pearson_b"] == 0.0 and m["ccc_b"] == 0.0  # constant truth: r undefined, reported as 0
    assert m["mse"] == pytest.approx((2 / 3 + 2 / 3) / 2) and m["ccc"] == pytest.approx(m["ccc_a"] / 2)
    # metrics are in original units: the same clips under another scaling give the same figures
    scaled = Regression(["a", "b"]).load_state({"targets": ["a", "b"], "center": [10, 0], "scale": [100, 1]})
    assert scaled.metrics(scores, (targets - [10, 0]) / [100, 1]) == pytest.approx(m)


def test_regression_tracking_follows_the_loss():
    for loss in ("mse", "mae"):
        task = Regression(["y"], loss=loss)
        assert task.summary() == {
            "name": "regression",
            "tracking_metric": "mae",
            "direction": "min",
            "headline": ["mse", "mae", "pearson", "ccc"],
        }
        assert task.is_better(0.2, 0.3) and not task.is_better(0.4, 0.3)
    task = Regression(["y"], loss="ccc")
    assert (task.tracking_metric, task.direction) == ("ccc", "max") and task.is_better(0.4, 0.3)


def test_regression_plots(tmp_path):
    task = Regression(["y"]).load_state({"targets": ["y"], "center": [500.0], "scale": [100.0]})
    task.plots(np.array([[450.0], [620.0]]), np.array([[-0.5], [1.0]]), tmp_path, "dev")
    assert (tmp_path / "predicted_dev.png").stat().st_size > 0
    assert (tmp_path / "predicted_dev.csv").read_text().splitlines() == [
        "true_y,predicted_y",
        "450.0,450.0",
        "600.0,620.0",
    ]


@pytest.mark.parametrize("value", ["", "fast", "nan", "inf"])
def test_regression_bad_values(fsdd_rows, value):
    rows = [fsdd_rows["train"][0], {**fsdd_rows["train"][1], "digit": value}]
    with pytest.raises(DataError, match=rf"train, row 2 \({rows[1]['path']}\): column 'digit' holds '{value}'"):
        Regression(TARGETS).fit(rows)
    with pytest.raises(DataError, match="no target column 'pitch'"):
        Regression(["pitch"]).fit(fsdd_rows["train"])


@pytest.mark.parametrize("value", ["-1e308", "1e308", "3e30"])
def test_regression_refuses_values_beyond_float32_at_fit_and_encode(fsdd_rows, value):
    """Such a value made the scaling infinite, and training crashed at its first evaluation."""
    rows = [fsdd_rows["train"][0], {**fsdd_rows["train"][1], "digit": value}]
    with pytest.raises(DataError, match=rf"train, row 2 \(.*\): column 'digit' holds '{value}', beyond ±1e\+30"):
        Regression(TARGETS).fit(rows)
    task = Regression(TARGETS).fit(fsdd_rows["train"])
    with pytest.raises(DataError, match=rf"dev split, row 1 \(.*\): column 'digit' holds '{value}'"):
        task.encode([{**fsdd_rows["dev"][0], "digit": value}], where="dev split")


def test_regression_refuses_a_scaling_past_what_float32_holds():
    rows = [{"path": "a.wav", "y": "-1e30"}, {"path": "b.wav", "y": "1e30"}]
    assert Regression(["y"]).fit(rows).scale == [1e30]
    with pytest.raises(
        DataError, match=r"train split: column 'y': its minmax scaling \(center -1e\+30, scale 2e\+30\)"
    ):
        Regression(["y"], scaling="minmax").fit(rows)


@pytest.mark.parametrize(
    ("state", "key"),
    [
        ({"targets": ["z"], "center": [0.0], "scale": [1.0]}, "targets"),
        ({"targets": ["y"], "scale": [1.0]}, "center"),
        ({"targets": ["y"], "center": [0.0], "scale": [0.0]}, "scale"),
        ({"targets": ["y"], "center": [float("nan")], "scale": [1.0]}, "center"),
        ({"targets": ["y"], "center": [0.0, 1.0], "scale": [1.0]}, "center"),
    ],
)
def test_regression_tampered_state(state, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        Regression(["y"]).load_state(state)


# ---------------------------------------------------------------- arguments and presets


@pytest.mark.parametrize(
    ("cls", "args", "message"),
    [
        (Classification, {"targets": ["a", "b"]}, "exactly one target column"),
        (Classification, {"targets": ["a"], "label_smoothing": 1.0}, "label_smoothing"),
        (Classification, {"targets": ["a"], "class_weights": "inverse"}, "class_weights"),
        (MultiLabel, {"targets": ["a", "a"]}, "distinct"),
        (MultiLabel, {"targets": ["a;b"]}, "';'"),
        (MultiLabel, {"targets": ["a"], "threshold": 0}, "threshold"),
        (MultiLabel, {"targets": ["a"], "tune_thresholds": "yes"}, "tune_thresholds"),
        (Regression, {"targets": []}, "non-empty"),
        (Regression, {"targets": ["y"], "loss": "huber"}, "loss"),
        (Regression, {"targets": ["y"], "scaling": "robust"}, "scaling"),
    ],
)
def test_bad_arguments(cls, args, message):
    with pytest.raises(ValueError, match=message):
        cls(**args)
    with pytest.raises(ValueError, match=message):  # the same check without building
        components.check(cls, args)
    rest = {k: v for k, v in args.items() if k != "targets"}
    if rest:  # config load, before the dataset fills in the targets
        target = f"{cls.__module__}:{cls.__name__}"
        with pytest.raises(ValueError, match=message):
            Component(target=target, args=rest).check_args("targets")


@pytest.mark.parametrize("name", ["classification", "multilabel", "regression"])
def test_presets_build(name, fsdd_rows):
    preset = load_preset("tasks", name)
    cls = resolve_target(preset["target"])
    components.check(cls, preset["args"], fixed=("targets",))  # as config load does
    targets = {"classification": ["label"], "multilabel": CLASSES, "regression": TARGETS}[name]
    task = cls(targets, **preset["args"]).fit(fsdd_rows["train"])
    assert task.name == name and task.encode(fsdd_rows["dev"], "dev").shape[0] == len(fsdd_rows["dev"])
    assert task.summary()["tracking_metric"] in task.metrics(
        task.scores(torch.zeros(2, task.n_outputs)).numpy(), task.encode(fsdd_rows["dev"][:2], "dev")
    )
