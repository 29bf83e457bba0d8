from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from pipelines.config import load_settings
from pipelines.models import load_pack, pack_info
from pipelines.models.base import Detections, filter_detections
from pipelines.models.convert import dequantize, file_sha256, fold_weight_dequantization
from pipelines.models.insightface_pack import PackFilesMissing, pack_files
from pipelines.models.registry import match_threshold
from pipelines.models.yunet_sface import SFACE_FILE, YUNET_FILE, sface_path, shipped_model, yunet_path
from pipelines.selfie import NoFaceFound, embed_selfie, pick_main_face
from pipelines.synthetic import insightface_image, read_bgr


def test_dequantize_modes():
    x = np.array([[0, 10], [20, 30]], np.int8)
    assert np.allclose(dequantize(x, np.array([0.5], np.float32), np.array([10], np.int8), 1, 2), [[-5, 0], [5, 10]])
    per_axis = dequantize(x, np.array([1.0, 2.0], np.float32), None, 0, 0)
    assert np.allclose(per_axis, [[0, 10], [40, 60]])
    blocked = dequantize(np.arange(8, dtype=np.int8).reshape(1, 8), np.array([[1.0, 10.0]], np.float32), None, 1, 4)
    assert np.allclose(blocked, [[0, 1, 2, 3, 40, 50, 60, 70]])


def test_conversion_is_cached_and_deterministic(tmp_path):
    first = yunet_path(str(tmp_path / "a"))
    mtime = first.stat().st_mtime_ns
    assert yunet_path(str(tmp_path / "a")) == first and first.stat().st_mtime_ns == mtime  # reused, not rewritten
    second = yunet_path(str(tmp_path / "b"))
    assert file_sha256(first) == file_sha256(second)
    model = onnx.load(str(first))
    assert not [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert [i.name for i in model.graph.input] == ["input"]


def quiet_session(model) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def test_shipped_files_are_rejected_as_is_and_load_after_conversion(cache_dir):
    with pytest.raises(Exception, match="block_size must be 0"):
        quiet_session(shipped_model(YUNET_FILE)).run(None, {"input": np.zeros((1, 3, 640, 640), np.float32)})
    x = np.random.default_rng(0).uniform(0, 255, (3, 3, 112, 112)).astype(np.float32)
    with pytest.raises(Exception, match="Required inputs"):
        quiet_session(shipped_model(SFACE_FILE)).run(None, {"data": x[:1]})
    out = quiet_session(sface_path(str(cache_dir))).run(None, {"data": x})[0]
    assert out.shape == (3, 128)  # batch is dynamic after conversion


def unblocked(model: onnx.ModelProto) -> onnx.ModelProto:
    """The shipped graph, still quantized, made loadable without folding (what MEASURED.md
    did by hand): single-element scales become per-tensor, unused graph inputs go."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        scale = onnx.numpy_helper.to_array(inits[node.input[1]])
        if scale.size != 1:
            continue  # true blocks: onnxruntime supports these
        zp = onnx.numpy_helper.to_array(inits[node.input[2]])
        del node.attribute[:]
        for name, arr in ((node.input[1], scale), (node.input[2], zp)):
            inits[name].CopyFrom(onnx.numpy_helper.from_array(arr.reshape(()), name))
    consumed = {i for n in model.graph.node for i in n.input}
    kept = [i for i in model.graph.input if i.name in consumed and i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return model


@pytest.mark.parametrize(
    ("name", "feed"), [(SFACE_FILE, ("data", (2, 3, 112, 112))), (YUNET_FILE, ("input", (1, 3, 640, 640)))]
)
def test_fp32_fold_matches_the_quantized_graph(cache_dir, name, feed):
    quantized = quiet_session(unblocked(onnx.load(str(shipped_model(name)))))
    folded = quiet_session(sface_path(str(cache_dir)) if name == SFACE_FILE else yunet_path(str(cache_dir)))
    x = np.random.default_rng(1).uniform(0, 255, feed[1]).astype(np.float32)
    batch = x if name == YUNET_FILE else x[:1]
    for a, b in zip(quantized.run(None, {feed[0]: batch}), folded.run(None, {feed[0]: batch}), strict=True):
        assert np.abs(a - b).max() < 1e-4


def test_yunet_matches_opencv_face_detector(cache_dir):
    image = read_bgr(insightface_image("t1.jpg"))
    h, w = image.shape[:2]
    ref = cv2.FaceDetectorYN.create(str(shipped_model(YUNET_FILE)), "", (w, h), 0.7, 0.3, 5000)
    _, faces = ref.detect(image)
    ours = load_pack(
        load_settings(None, models={"det_size": max(h, w), "cache_dir": str(cache_dir)}).models
    ).detector.detect(image)
    assert len(ours) == len(faces) == 6
    ref_boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1)
    for box, score in zip(ours.boxes, ours.scores, strict=True):
        j = np.argmin(np.abs(ref_boxes - box).sum(axis=1))
        assert np.abs(ref_boxes[j] - box).max() < 3.0
        assert abs(faces[j, -1] - score) < 0.02
        assert (
            np.abs(faces[j, 4:14].reshape(5, 2) - ours.landmarks[np.argmin(np.abs(ours.boxes - box).sum(axis=1))]).max()
            < 3.0
        )


def test_sface_matches_opencv_face_recognizer(pack, cache_dir):
    image = read_bgr(insightface_image("t1.jpg"))
    dets = pack.detector.detect(image)
    crops = pack.align_all(image, dets)
    ours = pack.embedder.embed(crops)
    ref = cv2.FaceRecognizerSF.create(str(sface_path(str(cache_dir))), "")
    for crop, vec in zip(crops, ours, strict=True):
        feat = ref.feature(crop).reshape(-1)
        assert float(vec @ (feat / np.linalg.norm(feat))) > 0.9999


def test_embeddings_are_unit_norm_and_separate_people(pack):
    image = read_bgr(insightface_image("t1.jpg"))
    dets = pack.detector.detect(image)
    vecs = pack.embedder.embed(pack.align_all(image, dets))
    assert vecs.dtype == np.float32 and vecs.shape == (6, 128)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs @ vecs.T
    off_diag = sims[~np.eye(6, dtype=bool)]
    assert off_diag.max() < pack.info.threshold
    flipped = cv2.flip(image, 1)
    fdets = pack.detector.detect(flipped)
    fvecs = pack.embedder.embed(pack.align_all(flipped, fdets))
    # Mirrored face j is original face i whose box centre mirrors j's.
    centres = (dets.boxes[:, 0] + dets.boxes[:, 2]) / 2
    fcentres = image.shape[1] - (fdets.boxes[:, 0] + fdets.boxes[:, 2]) / 2
    same = np.abs(fcentres[:, None] - centres[None, :]).argmin(axis=1)
    fsims = fvecs @ vecs.T
    assert (fsims.argmax(axis=1) == same).all()  # every mirrored face finds itself first
    assert fsims[np.arange(6), same].min() > 0.5


def test_selfie_picks_the_largest_confident_face(pack):
    dets = Detections(
        np.array([[0, 0, 10, 10], [0, 0, 50, 50], [0, 0, 52, 52]], np.float32),
        np.zeros((3, 5, 2), np.float32),
        np.array([0.9, 0.95, 0.5], np.float32),
    )
    assert pick_main_face(dets) == 1
    with pytest.raises(NoFaceFound):
        embed_selfie(pack, np.full((200, 200, 3), 128, np.uint8), 0.7, 20)


def test_filter_detections_drops_small_and_weak_faces():
    dets = Detections(
        np.array([[0, 0, 10, 40], [0, 0, 40, 40], [0, 0, 40, 40]], np.float32),
        np.zeros((3, 5, 2), np.float32),
        np.array([0.9, 0.9, 0.3], np.float32),
    )
    kept = filter_detections(dets, min_score=0.5, min_face_px=20)
    assert len(kept) == 1 and kept.boxes[0, 0] == 0 and kept.boxes[0, 2] == 40


def test_insightface_pack_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(PackFilesMissing, match=r"never downloads.*non-commercial"):
        pack_files(tmp_path, "buffalo_l")
    settings = load_settings(None, models={"pack": "buffalo_l", "insightface_root": str(tmp_path)})
    with pytest.raises(PackFilesMissing, match=r"det_10g\.onnx"):
        load_pack(settings.models)
    with pytest.raises(ValueError, match="unknown model pack"):
        pack_info("nope")


def test_insightface_pack_wiring_with_stand_in_files(tmp_path, cache_dir, pack):
    """The pack's files are found, loaded through InsightFace's model_zoo, and our ArcFace
    wrapper embeds with them.

    No InsightFace weights ship anywhere we may use offline, so the stand-in recognition
    file is our converted SFace under buffalo_s's name. InsightFace reads its input
    normalisation from the graph, so the wrapper must reproduce SFace's own embeddings;
    SCRFD's accuracy is not tested.
    """
    from insightface.model_zoo import model_zoo

    from pipelines.models.insightface_pack import ArcFaceEmbedder

    pack_dir = tmp_path / "buffalo_s"
    pack_dir.mkdir()
    (pack_dir / "w600k_mbf.onnx").write_bytes(sface_path(str(cache_dir)).read_bytes())
    (pack_dir / "det_500m.onnx").write_bytes(b"")
    det, rec = pack_files(tmp_path, "buffalo_s")
    assert det.name == "det_500m.onnx"
    model = model_zoo.get_model(str(rec), providers=["CPUExecutionProvider"], download=False)
    assert type(model).__name__ == "ArcFaceONNX"
    model.prepare(-1)
    wrapper = ArcFaceEmbedder(model)
    image = read_bgr(insightface_image("t1.jpg"))
    crops = pack.align_all(image, pack.detector.detect(image))
    got = wrapper.embed(crops)
    assert wrapper.dim == 128 and got.shape == (6, 128)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (got * pack.embedder.embed(crops)).sum(axis=1).min() > 0.9999
    assert wrapper.embed(crops[:0]).shape == (0, 128)


def test_thresholds_and_env_overrides(monkeypatch, tmp_path):
    assert match_threshold(load_settings(None).models) == pack_info("yunet-sface").threshold
    with pytest.raises(ValueError):
        load_settings(None, decode={"sample_fps": -1})
    cfg = tmp_path / "facereel.yaml"
    cfg.write_text("decode:\n  sample_fps: 4\nmodels:\n  match_threshold: 0.5\n")
    monkeypatch.setenv("FACEREEL_DECODE__SAMPLE_FPS", "3")
    s = load_settings(cfg)
    assert s.decode.sample_fps == 3.0  # env beats YAML
    assert match_threshold(s.models) == 0.5


def test_fold_leaves_only_compute_nodes():
    model = onnx.load(str(shipped_model(YUNET_FILE)))
    folded = fold_weight_dequantization(model, {})
    ops = {n.op_type for n in folded.graph.node}
    assert "DequantizeLinear" not in ops and "Conv" in ops
    assert [o.name for o in folded.graph.output] == [o.name for o in model.graph.output]
