"""The `Predictor` API: parity with the eager model, every input kind, bad inputs, bundle verification
and engine fallback."""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from project import Predictor
from project.config import UserError
from project.deploy.backends import BACKENDS, Backend
from project.deploy.backends.eager import EagerBackend, EagerEngine
from project.deploy.bundle import BundleError
from project.inference import InvalidInput, Preprocessor
from tests.inference_helpers import bomb_png, build_bundle, digit_samples, png_bytes, save_pngs

# the shared fixtures (digits_model, digits_bundle): registered once, so session scope holds across files


@pytest.fixture(scope="module")
def predictor(digits_bundle: Path) -> Predictor:
    return Predictor.load(digits_bundle)


def mixed_inputs(images: np.ndarray, tmp_path: Path) -> list:
    """The same kind of digits in every accepted form and size."""
    paths = save_pngs(tmp_path / "png", images[:4], np.zeros(4, dtype=int))
    big_rgb = Image.fromarray(images[4]).resize((64, 48)).convert("RGB")
    return [
        *map(str, paths),
        paths[0],  # pathlib.Path
        png_bytes(images[5]),
        Image.fromarray(images[6]),
        big_rgb,
        images[7],  # HW uint8
        np.repeat(images[8][:, :, None], 3, axis=2),  # HWC uint8, RGB
        torch.from_numpy(images[9]).float()[None] / 255,  # CHW float tensor in [0, 1]
        images[10].astype(np.float32)[None] / 255,  # CHW float numpy
        png_bytes(Image.fromarray(images[11]).resize((32, 32)), "JPEG"),
    ]


def test_project_exports_predictor() -> None:
    import project

    assert project.Predictor is Predictor


def test_predictions_equal_eager_model_on_the_same_tensors(digits_bundle: Path, digits_model, tmp_path: Path) -> None:
    _, data = digits_model
    images, _ = digit_samples(data)
    inputs = mixed_inputs(images, tmp_path)
    names = [r["name"] for r in Predictor.load(digits_bundle).bundle.info["engines"]]
    assert "eager" in names
    for name in names:  # every engine the bundle holds, each against the eager fp32 network
        predictor = Predictor.load(digits_bundle, backend=name, batch_size=5, trust_native_code=True)  # built here
        assert predictor.backend == name
        batch = predictor.preprocess(inputs)
        assert batch.shape == (len(inputs), 1, 8, 8) and batch.dtype == torch.float32
        with torch.inference_mode():
            expected = predictor.bundle.net()(batch).argmax(1).tolist()
        assert [p.index for p in predictor.predict(inputs)] == expected, name


def test_accuracy_on_test_pngs(predictor: Predictor, digits_model, tmp_path: Path) -> None:
    _, data = digits_model
    images, labels = digit_samples(data, 100)
    paths = save_pngs(tmp_path, images, labels)
    predictions = predictor.predict(paths)
    accuracy = np.mean([p.label == str(y) for p, y in zip(predictions, labels, strict=True)])
    assert accuracy >= 0.9  # preprocessing matches training, or this would collapse


def test_every_input_kind_gives_the_same_tensor(predictor: Predictor, digits_model, tmp_path: Path) -> None:
    _, data = digits_model
    image = digit_samples(data, 1)[0][0]
    path = tmp_path / "digit.png"
    Image.fromarray(image).save(path)
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    forms = [
        path,
        str(path),
        path.read_bytes(),
        open(path, "rb"),  # noqa: SIM115 (a file object is an accepted input)
        Image.fromarray(image),
        Image.fromarray(rgb),  # RGB → L with equal channels is exact
        image,
        image[:, :, None],
        rgb,
        torch.from_numpy(image)[None],  # CHW uint8 tensor
        torch.from_numpy(image).float()[None] / 255,
        image.astype(np.float64) / 255,  # HW float numpy
    ]
    reference = predictor.preprocessor.to_uint8(forms[0])
    assert reference.shape == (1, 8, 8) and reference.dtype == torch.uint8
    assert torch.equal(reference, torch.from_numpy(image)[None])
    for form in forms[1:]:
        assert torch.equal(predictor.preprocessor.to_uint8(form), reference), type(form)
    forms[3].close()


def test_resizing_and_channel_conversion() -> None:
    rgb_model = Preprocessor(channels=3, height=16, width=12, mean=[0.5] * 3, std=[0.25] * 3)
    grey = np.full((40, 30), 200, dtype=np.uint8)
    out = rgb_model.to_uint8(grey)
    assert out.shape == (3, 16, 12) and (out == 200).all()  # greyscale → RGB replicates the channel
    rgba = np.zeros((5, 7, 4), dtype=np.uint8)
    assert rgb_model.to_uint8(rgba).shape == (3, 16, 12)  # alpha dropped
    batch = rgb_model([grey, rgba])
    assert batch.shape == (2, 3, 16, 12) and torch.allclose(batch[0], torch.full((3, 16, 12), (200 / 255 - 0.5) / 0.25))
    grey_model = Preprocessor(channels=1, height=8, width=8, mean=[0.0], std=[1.0])
    red = np.zeros((8, 8, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert grey_model.to_uint8(red).unique().tolist() == [76]  # ITU-R 601-2 luma, as Pillow's "L"


def test_topk_scores_and_labels(predictor: Predictor, digits_model) -> None:
    _, data = digits_model
    images, _ = digit_samples(data, 3)
    [p1, p2, p3] = predictor.predict(torch.from_numpy(images)[:, None], topk=3)  # a 4-D batch is 3 inputs
    for p in (p1, p2, p3):
        assert len(p.topk) == 3
        assert p.topk[0] == {"label": p.label, "index": p.index, "score": p.score}
        scores = [t["score"] for t in p.topk]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
        assert all(t["label"] == predictor.class_names[t["index"]] for t in p.topk)
    assert len(predictor.predict(images[0], topk=50)[0].topk) == 10  # clamped to the class count
    assert set(p1.to_dict()) == {"label", "index", "score", "topk"}
    with pytest.raises(ValueError):
        predictor.predict(images[0], topk=0)


def test_batching_does_not_change_results(digits_bundle: Path, digits_model) -> None:
    _, data = digits_model
    images, _ = digit_samples(data, 11)
    one = Predictor.load(digits_bundle, batch_size=1).predict(list(images))
    many = Predictor.load(digits_bundle, batch_size=4).predict(list(images))
    assert [p.index for p in one] == [p.index for p in many]
    assert np.allclose([p.score for p in one], [p.score for p in many], atol=1e-5)


def _truncated_png(image: np.ndarray) -> bytes:
    data = png_bytes(np.tile(image, (8, 8)))
    return data[: len(data) // 2]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_INPUTS = {  # id: (make(tmp_path, a digit image), what the reason must say)
    "corrupt_png": (lambda tmp, img: _write(tmp / "x.png", b"\x89PNG\r\n\x1a\n garbage"), "corrupt"),
    "truncated_png": (lambda tmp, img: _write(tmp / "t.png", _truncated_png(img)), "truncated"),
    "text_file": (lambda tmp, img: _write(tmp / "notes.txt", b"not an image"), "not a recognised image"),
    "empty_file": (lambda tmp, img: _write(tmp / "e.png", b""), "empty file"),
    "missing_file": (lambda tmp, img: tmp / "missing.png", "file not found"),
    "folder": (lambda tmp, img: tmp, "not a file"),
    "bomb_png": (lambda tmp, img: bomb_png(), "too large"),  # caught from the header, never decoded
    "empty_bytes": (lambda tmp, img: b"", "empty file"),
    "int64_array": (lambda tmp, img: img.astype(np.int64), "unsupported dtype"),
    "bool_array": (lambda tmp, img: img.astype(bool), "unsupported dtype"),
    "float_0_255": (lambda tmp, img: img.astype(np.float32), "[0, 1]"),
    "nan": (lambda tmp, img: np.full((8, 8), np.nan, dtype=np.float32), "NaN"),
    "five_channels": (lambda tmp, img: np.zeros((8, 8, 5), dtype=np.uint8), "channel axis"),
    "two_channels": (lambda tmp, img: np.zeros((2, 8, 8), dtype=np.uint8), "channel axis"),
    "5d": (lambda tmp, img: np.zeros((1, 1, 1, 8, 8), dtype=np.uint8), "dimensions"),
    "zero_size": (lambda tmp, img: np.zeros((0, 8), dtype=np.uint8), "no pixels"),
    "int_tensor": (lambda tmp, img: torch.zeros(3, 8, 8, dtype=torch.int32), "unsupported dtype"),
    "dict": (lambda tmp, img: {"image": 1}, "unsupported input type"),
    "none": (lambda tmp, img: None, "unsupported input type"),
}


@pytest.mark.parametrize(("make", "reason"), list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_inputs_raise_invalid_input(predictor: Predictor, digits_model, tmp_path: Path, make, reason: str) -> None:
    image = digit_samples(digits_model[1], 1)[0][0]
    bad = make(tmp_path, image)
    with pytest.raises(InvalidInput) as info:
        predictor.predict(bad)
    assert reason in info.value.reason, info.value
    assert isinstance(info.value, ValueError)


def test_pixel_limit_is_configurable(digits_bundle: Path) -> None:
    strict = Predictor.load(digits_bundle, max_pixels=32 * 32)
    assert strict.predict(np.zeros((32, 32), dtype=np.uint8))  # at the limit: fine
    with pytest.raises(InvalidInput, match=r"above the limit of 1,024"):
        strict.predict(png_bytes(np.zeros((40, 40), dtype=np.uint8)))  # refused from the header
    with pytest.raises(InvalidInput, match="decompression-bomb"):
        strict.predict(np.zeros((33, 33), dtype=np.uint8))


def test_one_bad_input_names_itself_and_predict_each_carries_on(predictor: Predictor, digits_model) -> None:
    images, _ = digit_samples(digits_model[1], 3)
    inputs = [images[0], b"junk", images[1], "/no/such/file.png", images[2]]
    with pytest.raises(InvalidInput, match="input 1: not a recognised image"):
        predictor.predict(inputs)
    results = list(Predictor.load(predictor.bundle.directory, batch_size=2).predict_each(inputs))
    assert [type(r).__name__ for r in results] == [
        "Prediction",
        "InvalidInput",
        "Prediction",
        "InvalidInput",
        "Prediction",
    ]
    assert results[3].source == "/no/such/file.png" and results[3].reason == "file not found"
    assert [r.index for r in results[::2]] == [p.index for p in predictor.predict(list(images))]
    clone = pickle.loads(pickle.dumps(results[1]))
    assert isinstance(clone, InvalidInput) and str(clone) == str(results[1])


# --- the bundle: verification and fallback ---------------------------------------------------------


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "deploy"))


def test_changed_file_is_refused_naming_it(digits_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(digits_bundle, tmp_path)
    weights = bundle / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"changed since it was written: weights\.safetensors"):
        Predictor.load(bundle)


def test_missing_file_is_refused_naming_it(digits_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(digits_bundle, tmp_path)
    (bundle / "classes.json").unlink()
    with pytest.raises(BundleError, match=r"bundle file missing: classes\.json"):
        Predictor.load(bundle)


def test_missing_bundle_and_run_folder(digits_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="bundle not found") as info:
        Predictor.load(tmp_path / "nope")
    assert isinstance(info.value, UserError)  # → one line and exit 2 on the command line
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        Predictor.load(tmp_path)
    _copy(digits_bundle, tmp_path)
    assert Predictor.load(tmp_path).bundle.directory == tmp_path / "deploy"  # a run folder works too
    with pytest.raises(BundleError, match="no engine 'tensorrt'"):
        Predictor.load(tmp_path, backend="tensorrt")


class BrokenBackend(Backend):
    """Saves fine, cannot load here (like a TensorRT engine on a CPU-only host)."""

    kind = "broken_test"

    def _build(self, net, example, max_batch_size, threads):
        return EagerEngine(net)

    def save(self, engine, directory: Path) -> list[str]:
        (directory / "engine.plan").write_bytes(b"\0" * 16)
        return ["engine.plan"]

    def _load(self, directory: Path, net, threads):
        raise RuntimeError(f"cannot deserialize {directory.name}/engine.plan on this machine")


def _bundle_with(engines_first: list[Backend], digits_model, tmp_path: Path) -> Path:
    net, data = digits_model
    eager = EagerBackend()
    engines = [(b, b.build(net, torch.zeros(1, 1, 8, 8), 8)) for b in engines_first]
    return build_bundle(tmp_path / "deploy", net, data, [*engines, (eager, eager.build(net, torch.empty(0), 0))])


def test_engine_that_cannot_load_falls_back_and_says_so_once(
    digits_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(BACKENDS, BrokenBackend.kind, BrokenBackend)
    bundle = _bundle_with([BrokenBackend()], digits_model, tmp_path)
    with caplog.at_level(logging.WARNING):
        predictor = Predictor.load(bundle)
    assert predictor.bundle.info["chosen"] == "broken_test"
    assert predictor.backend == "eager"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "fallback to eager" in warnings[0] and "broken_test" in warnings[0] and "engine.plan" in warnings[0]
    assert predictor.predict(np.zeros((8, 8), dtype=np.uint8))


def test_engine_of_unknown_kind_falls_back(
    digits_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    class Foreign(BrokenBackend):
        kind = "tensorrt_test"

    with monkeypatch.context() as m:  # registered while writing, as on the machine that built it ...
        m.setitem(BACKENDS, Foreign.kind, Foreign)
        bundle = _bundle_with([Foreign()], digits_model, tmp_path)
    with caplog.at_level(logging.WARNING):  # ... and unknown on this one
        predictor = Predictor.load(bundle)
    assert predictor.backend == "eager"
    assert sum("unknown backend kind 'tensorrt_test'" in r.getMessage() for r in caplog.records) == 1


def test_fallback_goes_to_the_next_engine_first(
    digits_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    class Second(EagerBackend):
        kind = "second_test"

    monkeypatch.setitem(BACKENDS, BrokenBackend.kind, BrokenBackend)
    monkeypatch.setitem(BACKENDS, Second.kind, Second)
    bundle = _bundle_with([BrokenBackend(), Second(name="second_test")], digits_model, tmp_path)
    with caplog.at_level(logging.WARNING):
        predictor = Predictor.load(bundle)
    assert predictor.backend == "second_test"
    assert any("fallback to second_test" in r.getMessage() for r in caplog.records)


def test_threads_reach_the_engine(digits_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    class Recording(EagerBackend):
        kind = "recording_test"

        def _load(self, directory: Path, net, threads):
            seen.append(threads)
            return super()._load(directory, net, threads)

    monkeypatch.setitem(BACKENDS, Recording.kind, Recording)
    bundle = _bundle_with([Recording(name="recording_test")], digits_model, tmp_path)
    Predictor.load(bundle, threads=1)
    Predictor.load(bundle)
    assert seen == [1, None]  # None: the library's default, never a value baked into the bundle


# --- the engine asked for is the engine loaded; batches within the verified range ---------------------


def test_asking_for_an_engine_loads_exactly_that_one(pipeline_bundle: Path, digits_model) -> None:
    bundle_info = Predictor.load(pipeline_bundle).bundle.info
    assert bundle_info["chosen"] == "onnxruntime" and [r["name"] for r in bundle_info["engines"]] == ["onnxruntime"]
    baseline = Predictor.load(pipeline_bundle, backend="eager")  # the weights file, not the chosen engine
    assert baseline.backend == "eager" and isinstance(baseline.engine, EagerEngine)
    chosen = Predictor.load(pipeline_bundle, backend="onnxruntime")
    assert chosen.backend == "onnxruntime" and not isinstance(chosen.engine, EagerEngine)
    images, _ = digit_samples(digits_model[1], 8)
    assert [p.index for p in baseline.predict(list(images))] == [p.index for p in chosen.predict(list(images))]


def test_a_name_the_bundle_lacks_is_refused_naming_the_engines_it_has(pipeline_bundle: Path) -> None:
    with pytest.raises(BundleError, match=r"^bundle has no engine 'openvino'; it has onnxruntime, eager$"):
        Predictor.load(pipeline_bundle, backend="openvino")


def test_a_named_engine_that_cannot_load_is_refused_not_replaced(
    digits_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BACKENDS, BrokenBackend.kind, BrokenBackend)
    bundle = _bundle_with([BrokenBackend()], digits_model, tmp_path)
    with pytest.raises(BundleError, match=r"engine 'broken_test' cannot load here .*engine\.plan"):
        Predictor.load(bundle, backend="broken_test")
    assert Predictor.load(bundle).backend == "eager"  # unnamed: the fallback order, as before


class NativeBackend(EagerBackend):
    """Stands in for an AOTInductor package: its `_load` would run code from the bundle's files, so here it
    writes `marker` instead, and a test sees whether that code would have run."""

    kind = "native_test"
    loads_native_code = True
    native_code = "a compiled library, loading it runs its code"
    marker: Path | None = None

    def _load(self, directory: Path, net, threads):
        type(self).marker.write_text("ran")
        return super()._load(directory, net, threads)


def native_bundle(digits_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A bundle whose chosen engine runs code when loaded, then eager; and the marker its loading writes."""
    monkeypatch.setitem(BACKENDS, NativeBackend.kind, NativeBackend)
    monkeypatch.setattr(NativeBackend, "marker", tmp_path / "ran")
    return _bundle_with([NativeBackend(name="native_test")], digits_model, tmp_path), tmp_path / "ran"


def test_an_engine_that_runs_code_loads_only_when_trusted(
    digits_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bundle, marker = native_bundle(digits_model, tmp_path, monkeypatch)
    with caplog.at_level(logging.WARNING):
        predictor = Predictor.load(bundle)  # unnamed: skipped, unopened, in the fallback order
    assert predictor.bundle.info["chosen"] == "native_test" and predictor.backend == "eager"
    assert not marker.exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "engine fallback to eager (native_test: a compiled library, loading it runs its code; "
        "pass trust_native_code=true for a bundle you built or trust)"
    ]
    with pytest.raises(BundleError, match=r"^not loading engine native_test: .*pass trust_native_code=true"):
        Predictor.load(bundle, backend="native_test")
    assert not marker.exists()
    assert Predictor.load(bundle, trust_native_code=True).backend == "native_test" and marker.exists()
    assert Predictor.load(bundle, backend="native_test", trust_native_code=True).backend == "native_test"


def test_compiled_engines_declare_that_loading_them_runs_code() -> None:
    """AOTInductor packages are dlopened; a TensorRT program is `torch.export.load`ed, which unpickles with
    weights_only=False. ONNX, OpenVINO IR and the safetensors weights are data."""
    runs_code = {kind for kind, cls in BACKENDS.items() if cls.loads_native_code}
    assert runs_code == {"inductor", "tensorrt"}
    assert all(BACKENDS[kind].native_code for kind in runs_code)


def test_batch_size_is_held_to_the_verified_range(pipeline_bundle: Path) -> None:
    from project.deploy.bundle import Bundle

    bundle = Bundle.open(pipeline_bundle)
    assert bundle.info["verified_batch_sizes"] == [1, 8] and bundle.batch_limit() == 8
    assert Predictor.load(pipeline_bundle).batch_size == 8  # the default, lowered to the limit
    assert Predictor.load(pipeline_bundle, backend="eager", batch_size=8).batch_size == 8
    refused = r"^batch_size=9 is above the largest batch .*\(8: parity checked at batch sizes \[1, 8\]\)"
    with pytest.raises(BundleError, match=refused):
        Predictor.load(pipeline_bundle, batch_size=9)


def _rewrite_bundle_json(bundle: Path, change) -> None:
    """Edit bundle.json and re-sign the manifest: a bundle as an older release wrote it."""
    import json

    from project.deploy.bundle import MANIFEST, sha256

    info = json.loads((bundle / "bundle.json").read_text())
    change(info)
    (bundle / "bundle.json").write_text(json.dumps(info))
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"]["bundle.json"] = sha256(bundle / "bundle.json")
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def test_a_bundle_without_a_recorded_range_is_held_to_its_largest_timed_batch(
    pipeline_bundle: Path, digits_bundle: Path, tmp_path: Path
) -> None:
    old = _copy(pipeline_bundle, tmp_path / "old")
    _rewrite_bundle_json(old, lambda info: info.pop("verified_batch_sizes"))
    with pytest.raises(BundleError, match=r"batch_size=9 is above"):
        Predictor.load(old, batch_size=9)  # its benchmark.json: parity ran at, engines built for, batch 8
    assert Predictor.load(digits_bundle).batch_size == 64  # written by hand, no benchmark: nothing to hold to


class FixedBatchBackend(EagerBackend):
    """Like a TensorRT engine: built for a fixed maximum batch, which it records and enforces."""

    kind = "fixed_test"

    def __init__(self, name=None, precision="fp32", channels_last=False, max_batch_size=None) -> None:
        super().__init__(name=name, precision=precision, channels_last=channels_last)
        self.options["max_batch_size"] = max_batch_size

    def _load(self, directory: Path, net, threads):
        engine, top = EagerEngine(net), self.max_batch_size

        def call(x):
            assert len(x) <= top, f"batch {len(x)} above the engine's profile maximum {top}"
            return engine(x)

        return call


def test_an_engine_built_for_a_fixed_maximum_batch_is_held_to_it(
    digits_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BACKENDS, FixedBatchBackend.kind, FixedBatchBackend)
    bundle = _bundle_with([FixedBatchBackend(name="fixed_test", max_batch_size=4)], digits_model, tmp_path)
    predictor = Predictor.load(bundle)
    assert predictor.backend == "fixed_test" and predictor.batch_size == 4
    assert len(predictor.predict([np.zeros((8, 8), dtype=np.uint8)] * 10)) == 10  # run 4 at a time
    with pytest.raises(BundleError, match=r"batch_size=5 is above .*fixed_test engine may run \(4: built for no"):
        Predictor.load(bundle, batch_size=5)
    assert Predictor.load(bundle, backend="eager", batch_size=8).batch_size == 8  # the weights have no such limit
