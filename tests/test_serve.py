"""``attri-ssc serve``: the JSON API in-process (FastAPI's TestClient) on the session's smoke run.

Oracles: the public API called directly (``attri_ssc.Run``: the server must show exactly what
``Run.edit``/``reconstruct``/``judge``/``read_case`` compute, never its own editing), PNG pixels
decoded with Pillow, and the upload readers' documented limits. A corpus of malformed requests
must each get a 4xx JSON answer naming the field, never a 500.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import shutil
import threading
import time

import nibabel as nib
import numpy as np
import pytest

# fastapi, httpx, uvicorn are in the test extra: an ImportError here is a failure, not a skip
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import attri_ssc  # noqa: E402
from attri_ssc.serve.app import create_app  # noqa: E402
from attri_ssc.serve.uploads import UploadLimits  # noqa: E402
from attri_ssc.serve.worker import ModelWorker, Superseded  # noqa: E402

LIMITS = UploadLimits(max_bytes=2 * 2**20, max_voxels=500_000)  # a phantom case: ~0.6 MB, 420k voxels


@pytest.fixture(scope="module")
def run(smoke_run):
    return attri_ssc.load_run(smoke_run)


@pytest.fixture(scope="module")
def client(run):
    with TestClient(create_app(run, LIMITS)) as c:
        yield c


@pytest.fixture(scope="module")
def items(client):
    return client.get("/api/items").json()["items"]


def pixels(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def grey(image) -> np.ndarray:
    """The shared intensity scale: [0, 1] -> 0..255, clipped (independent of the server's code)."""
    return np.round(np.clip(np.asarray(image, dtype=np.float64), 0, 1) * 255).astype(np.uint8)


def test_info_reports_the_runs_attributes_units_ranges_and_rules(client, run):
    info = client.get("/api/info").json()
    assert [a["name"] for a in info["attributes"]] == list(run.attribute_names)
    for a in info["attributes"]:
        assert a["unit"] == run.attribute_units[a["name"]]
        assert (a["low"], a["high"]) == pytest.approx(run.attribute_ranges[a["name"]])
    assert {"cm²", "mm"} <= {a["unit"] for a in info["attributes"]}
    assert info["rules"] == list(attri_ssc.api.EDIT_RULES) and info["default_rule"] == "feedback"
    assert info["spatial_dims"] == 2 and info["slices"] is None and info["judge"] is True
    assert info["limits"] == {"max_upload_bytes": LIMITS.max_bytes, "max_upload_voxels": LIMITS.max_voxels}


def test_gallery_lists_the_held_out_items_with_truth_and_thumbnails(items, run):
    truth = run.test_items()
    assert [i["id"] for i in items] == [f"{t['case_id']}:{t['slice']}" for t in truth]
    for item, t in zip(items, truth):
        assert item["attributes"] == pytest.approx(t["attributes"])
        np.testing.assert_array_equal(pixels(item["thumbnail"]), grey(t["image"][0]))


def test_edit_shows_what_the_public_api_computes(client, items, run):
    item = run.test_items()[0]
    body = {"item": items[0]["id"], "attribute": "lv_area", "alpha": 1.0, "rule": "feedback"}
    reply = client.post("/api/edit", json=body)
    assert reply.status_code == 200, reply.text
    got = reply.json()
    direct = run.edit(item["image"], "lv_area", [0.0, 1.0], "feedback", saliency=True)
    recon = run.reconstruct(item["image"])
    # original, reconstruction (the model's forward pass) and edit on one shared grey scale
    np.testing.assert_array_equal(pixels(got["images"]["original"]), grey(item["image"][0]))
    assert np.abs(pixels(got["images"]["reconstruction"]).astype(int) - grey(recon[0, 0]).astype(int)).max() <= 1
    assert np.abs(pixels(got["images"]["edited"]).astype(int) - grey(direct.images[1, 0, 0]).astype(int)).max() <= 1
    assert got["scales"]["intensity"] == [0.0, 1.0]
    names = run.attribute_names
    for i, name in enumerate(names):
        assert got["readings"]["before"][name] == pytest.approx(float(direct.readings[0, 0, i]), rel=1e-5, abs=1e-5)
        assert got["readings"]["after"][name] == pytest.approx(float(direct.readings[1, 0, i]), rel=1e-5, abs=1e-5)
        assert got["readings"]["original"][name] == pytest.approx(
            float(run.read_attributes(item["image"])[0, i]), rel=1e-5, abs=1e-5)
    # difference map: red where the edit brightened, blue where it darkened, symmetric scale
    diff = np.clip(direct.images[1, 0, 0].numpy(), 0, 1) - np.clip(direct.images[0, 0, 0].numpy(), 0, 1)
    scale = got["scales"]["difference"][1]
    assert scale == pytest.approx(max(float(np.abs(diff).max()), 0.02), rel=1e-4)
    rgb = pixels(got["images"]["difference"]).astype(int)
    strong = np.abs(diff) > 0.5 * scale
    assert strong.any()
    assert np.all(np.sign(rgb[..., 0] - rgb[..., 2])[strong] == np.sign(diff)[strong])
    # saliency: opacity follows the API's saliency map, normalised by its peak
    sal = direct.saliency[1, 0, 0].numpy()
    assert got["scales"]["saliency"][1] == pytest.approx(float(sal.max()), rel=1e-4)
    alpha_channel = pixels(got["images"]["saliency"])[..., 3].astype(float) / 255
    np.testing.assert_allclose(alpha_channel, sal / sal.max(), atol=1 / 255 + 1e-6)
    # the judge's read is the model-free judge on the reconstruction and the edit
    judged = run.judge(direct.images[:, 0])
    for i, name in enumerate(names):
        for key, row in (("before", 0), ("after", 1)):
            value = float(judged[row, i])
            assert (got["judge"][key][name] is None) == (not np.isfinite(value))
            if np.isfinite(value):
                assert got["judge"][key][name] == pytest.approx(value, rel=1e-5)
    assert got["settings"]["rule"] == "feedback" and got["settings"]["alphas"] == [1.0]
    assert got["held"] == ["myo_area", "infarct_area"] == got["settings"]["hold"]


def test_alpha_zero_is_the_reconstruction_under_every_rule(client, items):
    replies = [client.post("/api/edit", json={"item": items[1]["id"], "attribute": "myo_area", "alpha": 0.0,
                                              "rule": rule}).json() for rule in ("feedback", "literal")]
    for r in replies:
        assert r["images"]["edited"] == r["images"]["reconstruction"]
        assert r["readings"]["after"] == r["readings"]["before"]
        assert r["images"]["saliency"] is None
    assert replies[1]["held"] == [] and replies[1]["settings"]["rule"] == "literal"


def test_drag_requests_leave_out_saliency_and_judge_but_show_the_same_edit(client, items):
    body = {"item": items[4]["id"], "attribute": "myo_area", "alpha": -0.35}
    drag = client.post("/api/edit", json={**body, "saliency": False, "judge": False}).json()
    release = client.post("/api/edit", json=body).json()
    assert drag["images"]["saliency"] is None and drag["judge"] is None
    assert release["images"]["saliency"] is not None and release["judge"] is not None
    assert drag["images"]["edited"] == release["images"]["edited"]
    assert drag["readings"] == release["readings"]


def test_hold_toggle_and_rules_reach_the_api(client, items, run):
    item = run.test_items()[1]
    got = client.post("/api/edit", json={"item": items[1]["id"], "attribute": "lv_area", "alpha": -0.5,
                                         "rule": "shift", "hold": False}).json()
    direct = run.edit(item["image"], "lv_area", [-0.5], "shift", [])
    assert got["held"] == []
    assert np.abs(pixels(got["images"]["edited"]).astype(int) - grey(direct.images[0, 0, 0]).astype(int)).max() <= 1
    held = client.post("/api/edit", json={"item": items[1]["id"], "attribute": "lv_area", "alpha": -0.5,
                                          "rule": "shift", "hold": True}).json()
    assert held["held"] == ["myo_area"]


def test_export_replays_to_the_same_image(client, items, run, tmp_path):
    body = {"item": items[2]["id"], "attribute": "myo_area", "alpha": 0.75, "rule": "feedback", "hold": True}
    settings = client.post("/api/export", json=body).json()
    shown = client.post("/api/edit", json=body).json()
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    result, _ = run.replay(attri_ssc.EditSettings.load(path))
    np.testing.assert_array_equal(grey(result.images[0, 0, 0]), pixels(shown["images"]["edited"]))
    assert client.post("/api/export/image", json=body).status_code == 422  # gallery items are in the data


def test_interpolation_frames_are_the_apis(client, items, run):
    got = client.post("/api/interpolate", json={"item_a": items[0]["id"], "item_b": items[3]["id"], "t": 0.26}).json()
    assert got["frame"] == 5 and got["frames"] == 21 and got["t"] == pytest.approx(0.25)
    tests = run.test_items()
    frames = run.interpolate(tests[0]["image"], tests[3]["image"], steps=21)
    assert np.abs(pixels(got["image"]).astype(int) - grey(frames[5, 0]).astype(int)).max() <= 1


# ---------------------------------------------------------------------------- uploads
def _nifti_bytes(data: np.ndarray, zooms=(1.5, 1.5, 10.0), gz: bool = True) -> bytes:
    img = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    img.header.set_zooms((*zooms, 1.0)[:data.ndim] if data.ndim <= 3 else (*zooms, 1.0))
    raw = img.to_bytes()
    return gzip.compress(raw) if gz else raw


def test_upload_of_a_case_matches_read_case_and_can_be_edited_and_exported(client, run, phantom_dir):
    case = phantom_dir / "Case_P002"
    image_file, mask_file = case / "Images" / "Case_P002.nii.gz", case / "Contours" / "Case_P002.nii.gz"
    reply = client.post("/api/upload", files={"image": ("img.nii.gz", image_file.read_bytes()),
                                              "mask": ("mask.nii.gz", mask_file.read_bytes())})
    assert reply.status_code == 200, reply.text
    added = reply.json()["items"]
    expected = attri_ssc.read_case(image_file, run=run, mask=mask_file)
    assert len(added) == len(expected)
    for item, (img, sl) in zip(added, zip(expected.images, expected.slice_indices)):
        assert item["source"] == "upload" and item["slice"] == sl
        np.testing.assert_array_equal(pixels(item["thumbnail"]), grey(img[0]))
    body = {"item": added[0]["id"], "attribute": "lv_area", "alpha": 0.5}
    assert client.post("/api/edit", json=body).status_code == 200
    settings = client.post("/api/export", json=body).json()
    assert settings["case_id"] is None and settings["image_path"].endswith(".image.npy")
    npy = np.load(io.BytesIO(client.post("/api/export/image", json=body).content), allow_pickle=False)
    np.testing.assert_array_equal(npy, expected.images[0].numpy())
    # without a mask: every slice, centred on the field of view
    bare = client.post("/api/upload", files={"image": ("img.nii.gz", image_file.read_bytes())})
    assert bare.status_code == 200, bare.text
    assert len(bare.json()["items"]) == nib.load(image_file).shape[2]


def _header_only(shape) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    return header.binaryblock + b"\x00" * 4


BAD_UPLOADS = [
    ("empty file", {"image": ("a.nii", b"")}, 422, "image"),
    ("not nifti", {"image": ("a.nii", b"hello" * 200)}, 422, "image"),
    ("broken gzip", {"image": ("a.nii.gz", b"\x1f\x8b\x08\x00" + b"\x00" * 500)}, 422, "image"),
    ("truncated gzip", {"image": ("a.nii.gz", gzip.compress(np.random.default_rng(0).bytes(5000))[:300])}, 422,
     "image"),
    ("gzip bomb", {"image": ("a.nii.gz", gzip.compress(b"\x00" * (3 * 2**20)))}, 413, "image"),
    ("too many voxels", {"image": ("a.nii", _header_only((1000, 1000, 10)))}, 413, "image"),
    ("header, no data", {"image": ("a.nii", _header_only((40, 40, 3)))}, 422, "image"),
    ("2D image", {"image": ("a.nii.gz", _nifti_bytes(np.ones((40, 40), np.float32)))}, 422, "image"),
    ("4D image", {"image": ("a.nii.gz", _nifti_bytes(np.ones((20, 20, 3, 2), np.float32)))}, 422, "image"),
    ("NaN voxels", {"image": ("a.nii.gz", _nifti_bytes(np.full((30, 30, 3), np.nan, np.float32)))}, 422, "image"),
    ("mask shape", {"image": ("a.nii.gz", _nifti_bytes(np.ones((30, 30, 3), np.float32))),
                    "mask": ("m.nii.gz", _nifti_bytes(np.ones((30, 31, 3), np.uint8)))}, 422, "mask"),
    ("mask not labels", {"image": ("a.nii.gz", _nifti_bytes(np.ones((30, 30, 3), np.float32))),
                         "mask": ("m.nii.gz", _nifti_bytes(np.full((30, 30, 3), 0.5, np.float32)))}, 422, "mask"),
    ("mask without myocardium", {"image": ("a.nii.gz", _nifti_bytes(np.ones((30, 30, 3), np.float32))),
                                 "mask": ("m.nii.gz", _nifti_bytes(np.zeros((30, 30, 3), np.uint8)))}, 422, "mask"),
    ("no image field", {"mask": ("m.nii.gz", _nifti_bytes(np.zeros((30, 30, 3), np.uint8)))}, 422, "image"),
    ("over the byte cap", {"image": ("a.nii", b"\x00" * (2 * 2**20 + 10))}, 413, "image"),
]


@pytest.mark.parametrize("files,status,field", [case[1:] for case in BAD_UPLOADS], ids=[c[0] for c in BAD_UPLOADS])
def test_broken_uploads_get_a_4xx_naming_the_field(client, files, status, field):
    reply = client.post("/api/upload", files=files)
    assert reply.status_code == status, reply.text[:300]
    body = reply.json()
    assert body["field"] == field and body["status"] == status and body["error"]


# ---------------------------------------------------------------------------- malformed requests
def _edit(**changes):
    body = {"item": "P002:0", "attribute": "lv_area", "alpha": 0.5, "rule": "feedback"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()

BAD_JSON = [
    ("not json", "/api/edit", b"{alpha: 1", 422, "body"),
    ("json array", "/api/edit", [1, 2], 422, "body"),
    ("json string", "/api/edit", "edit", 422, "body"),
    ("missing item", "/api/edit", _edit(item=_DROP), 422, "item"),
    ("unknown item", "/api/edit", _edit(item="Z999:0"), 404, "item"),
    ("item with a path", "/api/edit", _edit(item="../../etc/passwd"), 422, "item"),
    ("unknown attribute", "/api/edit", _edit(attribute="ejection_fraction"), 422, "attribute"),
    ("alpha above 1", "/api/edit", _edit(alpha=1.5), 422, "alpha"),
    ("alpha below -1", "/api/edit", _edit(alpha=-1.01), 422, "alpha"),
    ("alpha not a number", "/api/edit", _edit(alpha="big"), 422, "alpha"),
    ("alpha null", "/api/edit", _edit(alpha=None), 422, "alpha"),
    ("alpha NaN", "/api/edit", b'{"item": "P002:0", "attribute": "lv_area", "alpha": NaN}', 422, "alpha"),
    ("alpha Infinity", "/api/edit", b'{"item": "P002:0", "attribute": "lv_area", "alpha": Infinity}', 422, "alpha"),
    ("unknown rule", "/api/edit", _edit(rule="magic"), 422, "rule"),
    ("hold a string", "/api/edit", _edit(hold="yes"), 422, "hold"),
    ("hold unknown name", "/api/edit", _edit(hold=["nope"]), 422, "hold"),
    ("hold the edited attribute", "/api/edit", _edit(hold=["lv_area"], alpha=0.4), 422, "hold"),
    ("literal cannot hold", "/api/edit", _edit(rule="literal", hold=["myo_area"], alpha=0.4), 422, "hold"),
    ("slice on a 2D run", "/api/edit", _edit(slice=3), 422, "slice"),
    ("negative slice", "/api/edit", _edit(slice=-1), 422, "slice"),
    ("unknown field", "/api/edit", _edit(path="/etc/passwd"), 422, "path"),
    ("bad session", "/api/edit", _edit(session="a b/c", seq=1), 422, "session"),
    ("negative seq", "/api/edit", _edit(session="s", seq=-1), 422, "seq"),
    ("t above 1", "/api/interpolate", {"item_a": "P002:0", "item_b": "P002:1", "t": 2}, 422, "t"),
    ("unknown item_b", "/api/interpolate", {"item_a": "P002:0", "item_b": "X:1", "t": 0.5}, 404, "item_b"),
    ("huge body", "/api/edit", {**_edit(), "pad": "x" * 100_000}, 413, "body"),
    ("export unknown attribute", "/api/export", _edit(attribute="age"), 422, "attribute"),
]


@pytest.mark.parametrize("path,body,status,field", [c[1:] for c in BAD_JSON], ids=[c[0] for c in BAD_JSON])
def test_malformed_requests_get_a_4xx_json_naming_the_field(client, items, path, body, status, field):
    assert any(i["id"] == "P002:0" for i in items)  # the corpus edits a real item
    if isinstance(body, bytes):
        reply = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        reply = client.post(path, json=body)
    assert reply.status_code == status, reply.text[:300]
    got = reply.json()
    assert got["field"] == field and got["status"] == status and got["error"]


def test_chunked_oversized_body_is_refused_before_parsing(client):
    def chunks():
        for _ in range(100):
            yield b"x" * 1024

    reply = client.post("/api/edit", content=chunks(), headers={"Content-Type": "application/json"})
    assert reply.status_code == 413 and reply.json()["field"] == "body"


def test_wrong_method_and_path_are_json_errors(client):
    assert client.get("/api/edit").status_code == 405
    reply = client.get("/api/nothing-here")
    assert reply.status_code == 404 and reply.json()["field"] == "path"


def test_page_and_assets_come_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and "static/app.js" in page.text
    for asset in ("app.js", "style.css"):
        reply = client.get(f"/static/{asset}")
        assert reply.status_code == 200 and len(reply.text) > 500
    everything = page.text + client.get("/static/app.js").text + client.get("/static/style.css").text
    assert "http://" not in everything and "https://" not in everything  # nothing from the internet
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/api/edit", "/api/upload", "/api/interpolate"}


# ---------------------------------------------------------------------------- concurrency
def test_concurrent_clients_get_the_same_answers_as_one_client(run, items):
    """8 threads against one real server (uvicorn) edit at once: every answer is 200 and equals the
    answer of the same request made alone (model calls cannot interleave)."""
    import httpx
    import uvicorn

    app = create_app(run, LIMITS)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 120
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    bodies = [{"item": items[i % 3]["id"], "attribute": ("lv_area", "myo_area")[i % 2],
               "alpha": (-1.0, 0.5, 1.0)[i % 3], "rule": ("feedback", "shift")[i % 2]} for i in range(8)]
    results: dict[int, list] = {}

    def client_thread(i: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as c:
            results[i] = [c.post("/api/edit", json=bodies[(i + k) % 8]) for k in range(3)]

    try:
        threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as c:
            alone = [c.post("/api/edit", json=b).json() for b in bodies]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert len(results) == 8
    for i, replies in results.items():
        for k, reply in enumerate(replies):
            assert reply.status_code == 200, reply.text
            got, ref = reply.json(), alone[(i + k) % 8]
            assert got["images"]["edited"] == ref["images"]["edited"]
            assert got["readings"] == ref["readings"]


def test_worker_skips_a_queued_request_superseded_by_a_newer_one():
    import asyncio

    worker = ModelWorker()
    gate = threading.Event()
    done: list[str] = []

    async def scenario():
        blocker = asyncio.ensure_future(worker.run(gate.wait))
        await asyncio.sleep(0.05)
        worker.supersede("s", 1)
        first = asyncio.ensure_future(worker.run(done.append, "seq1", session="s", seq=1))
        worker.supersede("s", 2)
        second = asyncio.ensure_future(worker.run(done.append, "seq2", session="s", seq=2))
        other = asyncio.ensure_future(worker.run(done.append, "other", session="t", seq=1))
        gate.set()
        await blocker
        with pytest.raises(Superseded):
            await first
        await second
        await other

    asyncio.run(scenario())
    worker.shutdown()
    assert done == ["seq2", "other"] and worker.jobs_skipped == 1


def test_superseded_edit_is_answered_without_an_error(client, items):
    client.post("/api/edit", json={**_edit(item=items[0]["id"]), "session": "page1", "seq": 5})
    stale = client.post("/api/edit", json={**_edit(item=items[0]["id"]), "session": "page1", "seq": 3})
    assert stale.status_code == 200 and stale.json()["superseded"] is True


# ---------------------------------------------------------------------------- the command
def test_serve_command_binds_localhost_by_default_and_names_a_missing_run(tmp_path, capsys):
    from attri_ssc.cli import build_parser, main

    args = build_parser().parse_args(["serve", str(tmp_path)])
    assert args.host == "127.0.0.1" and args.port == 8765
    assert main(["serve", str(tmp_path / "nope")]) == 5
    assert "has no trained model" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--port", "70000"]) == 2


def test_serve_command_with_a_taken_port_is_a_clear_error(smoke_run, capsys):
    import socket

    from attri_ssc.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(smoke_run), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


# ---------------------------------------------------------------------------- 3D
@pytest.mark.slow
def test_3d_run_gets_a_slice_slider_and_volume_attributes(tmp_path_factory):
    """A tiny 3D run (8 × 32 × 32 volumes): the shown slice is the edited volume's slice, volume
    attributes in mL, no judge (it measures 2D slices), slices outside the volume refused."""
    from attri_ssc.cli import main

    root = tmp_path_factory.mktemp("serve3d")
    assert main(["generate-phantoms", str(root / "data"), "--n-cases", "8", "--seed", "5"]) == 0
    sets = ["data.spatial_dims=3", "model.spatial_dims=3", "data.spacing_mm=4.0", "data.n_slices=8",
            "model.input_size=[8,32,32]", "data.split_fractions=[0.5,0.25,0.25]",
            "data.attributes=[lv_volume,myo_volume]", "train.num_threads=1", f"data.cache_dir={root / 'cache'}",
            "stages.0.steps=4", "stages.1.steps=3", "stages.2.steps=3"]
    argv = ["train", "--data", str(root / "data"), "--config", "smoke", "--out", str(root / "run"), "--no-progress"]
    assert main([*argv, *[a for s in sets for a in ("--set", s)]]) == 0
    run = attri_ssc.load_run(root / "run")
    with TestClient(create_app(run)) as c:
        info = c.get("/api/info").json()
        assert info["spatial_dims"] == 3 and info["slices"] == 8 and info["judge"] is False
        assert {a["unit"] for a in info["attributes"]} == {"mL"}
        item = c.get("/api/items").json()["items"][0]
        assert item["slice"] is None
        volume = run.test_items()[0]["image"]
        direct = run.edit(volume, "lv_volume", [0.5], "feedback", saliency=False)
        planes = []
        for s in (2, 5):
            got = c.post("/api/edit", json={"item": item["id"], "attribute": "lv_volume", "alpha": 0.5, "slice": s,
                                            "saliency": False, "judge": False}).json()
            assert got["slice"] == s and got["judge"] is None
            np.testing.assert_array_equal(pixels(got["images"]["original"]), grey(volume[0, s]))
            edited = pixels(got["images"]["edited"]).astype(int)
            assert np.abs(edited - grey(direct.images[0, 0, 0, s]).astype(int)).max() <= 1
            planes.append(edited)
        assert not np.array_equal(*planes)
        bad = c.post("/api/edit", json={"item": item["id"], "attribute": "lv_volume", "alpha": 0.5, "slice": 8})
        assert bad.status_code == 422 and bad.json()["field"] == "slice"


def test_serve_without_the_web_packages_names_the_extra(smoke_run, monkeypatch, capsys):
    import importlib.util

    from attri_ssc.cli import main
    from attri_ssc.serve import missing_packages

    assert missing_packages() == []  # the test extra installs them
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["serve", str(smoke_run)]) == 2
    err = capsys.readouterr().err
    assert "uvicorn" in err and "pip install 'attri-ssc[serve]'" in err


def test_worker_runs_background_jobs_only_when_no_request_waits():
    import asyncio

    worker = ModelWorker()
    gate = threading.Event()
    done: list[str] = []

    async def scenario():
        blocker = asyncio.ensure_future(worker.run(gate.wait))
        await asyncio.sleep(0.05)
        background = [worker.background(done.append, f"bg{k}") for k in range(2)]
        search = asyncio.ensure_future(worker.run(done.append, "search", priority=worker.SEARCH))
        requests = [asyncio.ensure_future(worker.run(done.append, f"req{k}")) for k in range(2)]
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        await asyncio.gather(*requests, search)
        for f in background:
            await asyncio.wrap_future(f)

    asyncio.run(scenario())
    worker.shutdown()
    assert done == ["req0", "req1", "search", "bg0", "bg1"] and worker.background_run == 2


def test_selecting_an_image_searches_its_feedback_steps_before_the_first_move(run):
    """The α = 0 request of a selection queues the step search of every slider in the background;
    the first move then only edits (no search), and shows the same edit the run computes directly."""
    with TestClient(create_app(run, LIMITS)) as c:
        item = c.get("/api/items").json()["items"][1]
        select = c.post("/api/edit", json={**_edit(item=item["id"], alpha=0.0), "session": "sel", "seq": 1})
        assert select.status_code == 200
        worker = c.app.state.worker
        deadline = time.time() + 300
        while worker.background_run < len(run.attribute_names) and time.time() < deadline:
            time.sleep(0.1)
        worker.call(lambda: None)  # the last background job has finished
        assert worker.background_run == len(run.attribute_names)
        cached = len(run._feedback_cache)
        move = c.post("/api/edit", json={**_edit(item=item["id"], alpha=0.6, attribute="myo_area"),
                                         "saliency": False, "judge": False, "session": "sel", "seq": 2}).json()
        assert len(run._feedback_cache) == cached  # found searched: nothing new
        # a second selection of the same item queues nothing again
        c.post("/api/edit", json={**_edit(item=item["id"], alpha=0.0), "session": "sel", "seq": 3})
        worker.call(lambda: None)
        assert worker.background_run == len(run.attribute_names)
    assert run.test_items()[1]["case_id"] == item["case_id"]
    direct = run.edit(run.test_items()[1]["image"], "myo_area", [0.6], "feedback")
    reading = direct.readings[0, 0].numpy()
    names = run.attribute_names
    assert [move["readings"]["after"][n] for n in names] == pytest.approx(reading.tolist(), rel=1e-5, abs=1e-6)


def test_worker_lets_a_search_be_overtaken_by_at_most_a_few_later_requests():
    import asyncio

    worker = ModelWorker()
    gate = threading.Event()
    done: list[str] = []
    n = worker.SEARCH_OVERTAKE + 3

    async def scenario():
        blocker = asyncio.ensure_future(worker.run(gate.wait))
        await asyncio.sleep(0.05)
        search = asyncio.ensure_future(worker.run(done.append, "search", priority=worker.SEARCH))
        await asyncio.sleep(0.01)
        requests = []
        for k in range(n):
            requests.append(asyncio.ensure_future(worker.run(done.append, f"req{k}")))
            await asyncio.sleep(0.005)
        gate.set()
        await asyncio.gather(blocker, search, *requests)

    asyncio.run(scenario())
    worker.shutdown()
    assert done.index("search") == worker.SEARCH_OVERTAKE  # never starved behind a stream of requests
    assert [d for d in done if d != "search"] == [f"req{k}" for k in range(n)]
