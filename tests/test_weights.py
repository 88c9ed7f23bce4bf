"""The pretrained-weights loader: safetensors and weights_only torch files, code-carrying pickles
refused, strict loading except a head named for replacement, key maps for foreign formats."""

import builtins
import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tympan.errors import DataError
from tympan.models import Cnn10, load_weights
from tympan.models.pann import PANN_KEYS


class Tiny(nn.Module):
    def __init__(self, n_outputs: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
        self.out = nn.Linear(8, n_outputs)


def tiny(seed: int, n_outputs: int = 3) -> Tiny:
    torch.manual_seed(seed)
    return Tiny(n_outputs)


def same(a: nn.Module, b: nn.Module, prefix: str = "") -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if k.startswith(prefix))


class Payload:
    """Unpickling this creates a file: the stand-in for code a checkpoint could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["w.safetensors", "w.pt", "w.bin"])
def test_loads_safetensors_and_torch_files(tmp_path, name):
    source = tiny(1)
    path = tmp_path / name
    if name.endswith(".pt"):
        torch.save(source.state_dict(), path)
    else:  # safetensors, told by its header whatever the name
        save_file(source.state_dict(), path)
    target = tiny(2)
    assert not same(source, target)
    loaded = load_weights(target, path)
    assert same(source, target)
    assert sorted(loaded.loaded) == sorted(source.state_dict()) and not loaded.kept_head


class SystemPayload(Payload):
    """The same through os.system, a module torch blocks outright (its error words this differently)."""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("payload", [Payload, SystemPayload], ids=["open", "os.system"])
def test_a_pickle_that_would_run_code_is_refused(tmp_path, legacy, payload):
    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    state = {"extra": payload(marker), **tiny(1).state_dict()}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)  # legacy: the format of torch < 1.6
    model = tiny(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DataError) as err:
        load_weights(model, path)
    assert not marker.exists()
    message = str(err.value)
    assert message.startswith(f"{path}: refused: unpickling it would run code (")
    assert ("open" in message or "system" in message) and "weights_only=True" in message
    # torch's own advice (re-run with weights_only=False, which "will likely succeed") is never passed on
    assert "weights_only=False" not in message and "likely succeed" not in message and "\n" not in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the payload is real: loading without weights_only runs it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_head_named_for_replacement_is_skipped_when_it_does_not_fit(tmp_path):
    path = tmp_path / "w.safetensors"
    source = tiny(1, n_outputs=5)
    save_file(source.state_dict(), path)
    target = tiny(2, n_outputs=3)
    fresh_head = {k: v.clone() for k, v in target.out.state_dict().items()}
    loaded = load_weights(target, path, head="out")
    assert same(source, target, "body.")
    assert all(torch.equal(fresh_head[k], v) for k, v in target.out.state_dict().items())
    assert sorted(loaded.kept_head) == ["out.bias", "out.weight"]
    # a head of the same size is loaded like everything else
    same_size = tiny(3, n_outputs=5)
    load_weights(same_size, path, head="out")
    assert same(source, same_size)
    # without naming the head, the mismatch is an error naming the file and the key
    with pytest.raises(DataError) as err:
        load_weights(tiny(2), path)
    assert str(err.value) == (
        f"{path}: weights do not fit Tiny: shapes differ for out.weight: file (5, 8), model (3, 8), "
        "out.bias: file (5,), model (3,)"
    )


def test_head_missing_from_the_file_keeps_its_initialisation(tmp_path):
    path = tmp_path / "body.pt"
    torch.save({k: v for k, v in tiny(1).state_dict().items() if not k.startswith("out.")}, path)
    target = tiny(2)
    assert load_weights(target, path, head="out.").kept_head == ["out.weight", "out.bias"]
    with pytest.raises(DataError, match=r"2 keys of the model missing from the file: out.weight, out.bias$"):
        load_weights(tiny(2), path)


def test_strict_errors_name_the_file_and_the_first_keys(tmp_path):
    path = tmp_path / "w.pt"
    state = tiny(1).state_dict()
    state.update({f"extra{i}": torch.zeros(1) for i in range(7)})
    del state["body.0.bias"]
    torch.save(state, path)
    model = tiny(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DataError) as err:
        load_weights(model, path)
    assert str(err.value) == (
        f"{path}: weights do not fit Tiny: 1 keys of the model missing from the file: body.0.bias; "
        "7 keys of the file unknown to the model: extra0, extra1, extra2, extra3, extra4, ... (2 more)"
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "nothing half-loaded"
    # not strict: what fits is loaded, the rest reported
    loaded = load_weights(model, path, strict=False)
    assert loaded.missing == ["body.0.bias"] and len(loaded.unexpected) == 7
    assert torch.equal(model.body[0].weight, state["body.0.weight"])


def test_shape_mismatch_is_an_error_even_when_not_strict(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"body.0.weight": torch.zeros(8, 5)}, path)
    with pytest.raises(DataError, match=r"shapes differ for body.0.weight: file \(8, 5\), model \(8, 4\)"):
        load_weights(tiny(1), path, strict=False)


def test_key_maps_and_nested_state_dicts_read_foreign_formats(tmp_path):
    source = tiny(1)
    foreign = {
        f"encoder.{k[len('body.') :]}" if k.startswith("body.") else k: v for k, v in source.state_dict().items()
    }
    foreign["frontend.filters"] = torch.zeros(3)  # a tensor tympan keeps elsewhere
    path = tmp_path / "foreign.pth"
    torch.save({"model": foreign, "iteration": 1000}, path)

    with pytest.raises(DataError) as err:
        load_weights(tiny(2), path)
    assert "2 entries are not tensors: model, iteration (nested='model' picks a state dict inside it)" in str(err.value)

    target = tiny(2)
    load_weights(target, path, nested="model", key_map={"encoder.": "body.", "frontend.": None})
    assert same(source, target)

    target = tiny(3)
    load_weights(
        target,
        path,
        nested="model",
        key_map=lambda k: None if k.startswith("frontend") else k.replace("encoder", "body"),
    )
    assert same(source, target)

    with pytest.raises(DataError, match="the key map gives two tensors the name 'body.0.weight'"):
        load_weights(tiny(2), path, nested="model", key_map={"encoder.": "body.", "frontend.filters": "body.0.weight"})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such weights file"),
        (b"not a checkpoint", "not a safetensors file, nor a torch file of tensors"),
        (torch.zeros(3), "holds a Tensor, not a state dict of named tensors"),
    ],
)
def test_unreadable_files_are_data_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "w.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(DataError) as err:
        load_weights(tiny(1), path)
    assert str(err.value).startswith(f"{path}: {message}")
    assert "weights_only" not in str(err.value) and "likely succeed" not in str(err.value)  # torch's advice


def pann_checkpoint(path, n_outputs: int = 527, seed: int = 1) -> dict:
    """A checkpoint in PANN's own format (layer names, wrapper, front-end filters) from a Cnn10."""
    torch.manual_seed(seed)
    state = Cnn10(n_outputs=n_outputs).state_dict()
    inverse = {v: k for k, v in PANN_KEYS.items() if v is not None}
    renamed = {}
    for key, tensor in state.items():
        prefix = next((p for p in inverse if key.startswith(p)), "")
        renamed[inverse.get(prefix, "") + key[len(prefix) :]] = tensor
    renamed["spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(513, 1, 1024)
    renamed["logmel_extractor.melW"] = torch.zeros(513, 64)
    torch.save({"model": renamed, "iteration": 600000}, path)
    return state


def test_cnn10_pretrained_loads_a_pann_checkpoint_and_replaces_its_head(tmp_path):
    path = tmp_path / "Cnn10_mAP=0.380.pth"
    state = pann_checkpoint(path)
    assert "conv_block1.conv1.weight" in torch.load(path, weights_only=True)["model"]

    torch.manual_seed(0)
    fresh = Cnn10(n_outputs=10)
    torch.manual_seed(0)
    model = Cnn10(n_outputs=10, pretrained=str(path))
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded if not k.startswith("fc_out."))
    # the 10-way head is the same fresh one a model without weights gets
    assert torch.equal(model.fc_out.weight, fresh.fc_out.weight)
    # with AudioSet's 527 outputs the head is loaded too
    full = Cnn10(n_outputs=527, pretrained=str(path))
    assert torch.equal(full.fc_out.weight, state["fc_out.weight"])


def test_cnn10_refuses_weights_of_another_architecture(tmp_path):
    path = tmp_path / "w.pth"
    state = {f"conv_block{i}.conv1.weight": torch.zeros(1) for i in range(1, 7)}
    torch.save({"model": state}, path)
    with pytest.raises(DataError) as err:
        Cnn10(n_outputs=10, pretrained=str(path))
    message = str(err.value)
    assert message.startswith(f"{path}: weights do not fit Cnn10: shapes differ for blocks.0.conv1.weight")
    assert "2 keys of the file unknown to the model: blocks.4.conv1.weight, blocks.5.conv1.weight" in message
