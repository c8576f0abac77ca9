"""The package on disk: what it holds, and a clear PackageError for every kind of damage or mismatch."""

import json
import shutil

import pytest
from flaxchat.export.convert import ExportSettings, export_model
from flaxchat.export.errors import PackageError
from flaxchat.export.package import CONFIG_FILE, MANIFEST_FILE, MODEL_FILE, TOKENIZER_DIR, read_package, write_package
from flaxchat.export.runtime import LiteRTModel


def test_package_holds_model_tokenizer_config_and_manifest(exports, tokenizer):
    package = read_package(exports["int8"] / MODEL_FILE)  # the model file's path works too
    assert package.path == exports["int8"]
    assert package.tokenizer.encode("hi") == tokenizer.encode("hi")
    c = package.config
    assert (c.n_layer, c.vocab_size, c.max_len, c.prefill_lengths, c.quantization) == (2, 265, 256, (8, 32), "int8")
    assert c.signatures == {"prefill_8": 8, "prefill_32": 32, "decode": 1}
    assert list(c.state_shapes) == ["prev_embedding", "k_cache_0", "k_cache_1", "v_cache_0", "v_cache_1"]
    assert c.source == {"checkpoint": "tiny"}
    manifest = json.loads((exports["int8"] / MANIFEST_FILE).read_text())
    assert {MODEL_FILE, CONFIG_FILE} <= set(manifest["files"])
    assert any(name.startswith(f"{TOKENIZER_DIR}/") for name in manifest["files"])


def test_corrupt_model_file(fp32_copy):
    data = bytearray((fp32_copy / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (fp32_copy / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(PackageError, match="does not match its sha256.*corrupt"):
        LiteRTModel.load(fp32_copy)


def test_truncated_model_file(fp32_copy):
    data = (fp32_copy / MODEL_FILE).read_bytes()
    (fp32_copy / MODEL_FILE).write_bytes(data[: len(data) // 3])
    with pytest.raises(PackageError, match="truncated"):
        LiteRTModel.load(fp32_copy)


def test_truncated_model_with_a_rewritten_manifest_is_caught_by_the_verifier(fp32_copy, rehash):
    """LiteRT's CompiledModel crashes the process on a damaged flatbuffer: the verifier must stop it first."""
    data = (fp32_copy / MODEL_FILE).read_bytes()
    (fp32_copy / MODEL_FILE).write_bytes(data[: len(data) // 3])
    rehash(fp32_copy)
    with pytest.raises(PackageError, match="not a valid LiteRT model"):
        LiteRTModel.load(fp32_copy)


def test_wrong_tokenizer(fp32_copy, make_tokenizer, rehash):
    shutil.rmtree(fp32_copy / TOKENIZER_DIR)
    make_tokenizer(merges=(b"th",)).save(fp32_copy / TOKENIZER_DIR)  # 266 ids for a 265-id model
    with pytest.raises(PackageError, match="does not match its sha256"):
        read_package(fp32_copy)
    rehash(fp32_copy)
    with pytest.raises(PackageError, match="266 tokens but the model was exported for 265.*does not belong"):
        read_package(fp32_copy)


def test_model_file_from_another_export(fp32_copy, exports, make_model, tokenizer, rehash, tmp_path):
    other = export_model(make_model(0, n_layer=3), tokenizer, tmp_path / "other.litert",
                         ExportSettings(prefill_lengths=(8, 32))).path
    shutil.copy(other / MODEL_FILE, fp32_copy / MODEL_FILE)
    rehash(fp32_copy)
    with pytest.raises(PackageError, match="does not match its config.json.*signature 'prefill_8' inputs"):
        LiteRTModel.load(fp32_copy)


def test_missing_and_foreign_directories(tmp_path, exports, tokenizer):
    with pytest.raises(PackageError, match="no exported model at .*apps/export"):
        read_package(tmp_path / "nothing.litert")
    (tmp_path / "plain").mkdir()
    with pytest.raises(PackageError, match="manifest.json is missing"):
        read_package(tmp_path / "plain")
    (tmp_path / "plain" / "notes.txt").write_text("mine")
    config = read_package(exports["fp32"]).config
    with pytest.raises(PackageError, match="not an exported model: refusing to replace it"):
        write_package(tmp_path / "plain", b"model", tokenizer, config)
    assert (tmp_path / "plain" / "notes.txt").read_text() == "mine"


def test_bad_config(fp32_copy, rehash):
    config = json.loads((fp32_copy / CONFIG_FILE).read_text())
    config["prefill_lengths"] = [32, 8]
    (fp32_copy / CONFIG_FILE).write_text(json.dumps(config))
    rehash(fp32_copy)
    with pytest.raises(PackageError, match="prefill_lengths"):
        read_package(fp32_copy)


def test_export_replaces_an_existing_package_atomically(exports, model, tokenizer, tmp_path):
    out = tmp_path / "again.litert"
    shutil.copytree(exports["fp32"], out)
    export_model(model, tokenizer, out, ExportSettings(quantization="int8", prefill_lengths=(8, 32)))
    assert read_package(out).config.quantization == "int8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.litert"]  # no temp or old directories left
