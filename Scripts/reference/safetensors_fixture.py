"""safetensors interoperability fixtures for LongMixer (Python side).

Regenerate / verify (from the package root):

    python3 Scripts/reference/safetensors_fixture.py

1. Writes Tests/Fixtures/python_written.safetensors with Python's `safetensors` package
   (F32, F16 with subnormal/inf/NaN/-0, I32, I64, rank 0, an empty tensor, metadata).
   Tests/LongMixerNNTests/SafeTensorsTests.swift checks every value exactly.
2. Loads Tests/Fixtures/swift_written.safetensors and swift_written_i64.safetensors (written by
   `LONGMIXER_WRITE_FIXTURES=1 swift test --filter SafeTensorsTests`) with Python's `safetensors`
   and checks every value bit for bit against the expectations below, which mirror
   `swiftWrittenTensors()` in the Swift test. Exits non-zero on any mismatch.
"""
import os
import sys

import numpy as np
import safetensors
import torch
from safetensors import safe_open
from safetensors.numpy import load_file as np_load_file
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "Tests", "Fixtures")

# F16 bit patterns: 0, -0, 1, -2, 65504 (max), 2^-14 (min normal), 2^-24 (min subnormal),
# 0x03FF (max subnormal), 0x0201 (a subnormal), +inf, -inf, NaN (0x7E00), NaN with payload (0x7C01,
# signalling), -NaN (0xFE00), 1/3 rounded (0x3555), -65504.
F16_BITS = [0x0000, 0x8000, 0x3C00, 0xC000, 0x7BFF, 0x0400, 0x0001, 0x03FF, 0x0201,
            0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFE00, 0x3555, 0xFBFF]


def python_written():
    f32 = np.array([0.5, -1.25, 3.0e-39, np.inf, -0.0, 1e30, -np.inf, np.nan, 3.1415927], dtype=np.float32)
    f16 = np.array(F16_BITS, dtype=np.uint16).view(np.float16).reshape(4, 4)
    tensors = {
        "f32.matrix": torch.from_numpy(f32.reshape(3, 3)),
        "f16.special": torch.from_numpy(f16.copy()),
        "i32.ids": torch.tensor([[0, 1, -1, 7], [2147483647, -2147483648, 42, -42], [5, 4, 3, 2]], dtype=torch.int32),
        "i64.ids": torch.tensor([0, -1, 2147483647, -2147483648, 123456789], dtype=torch.int64),
        "scalar.f32": torch.tensor(2.5, dtype=torch.float32),
        "scalar.i64": torch.tensor(-7, dtype=torch.int64),
        "empty.f32": torch.zeros(0, 3, dtype=torch.float32),
        "rank4.f32": (torch.arange(12, dtype=torch.float32) * 0.25 - 1.0).reshape(2, 1, 2, 3),
    }
    metadata = {"format": "pt", "written_by": "safetensors_fixture.py", "unicode": "h\u00e9llo \u2713 \"quoted\"\n"}
    path = os.path.join(FIXTURES, "python_written.safetensors")
    # The Rust writer orders "__metadata__" keys by a randomly seeded hash map, so the bytes differ
    # between runs; keep the committed file when its contents are already the same.
    temp = path + ".tmp"
    save_file(tensors, temp, metadata=metadata)
    if os.path.exists(path) and same_contents(path, temp):
        os.remove(temp)
        print(f"{path}: unchanged")
    else:
        os.replace(temp, path)
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def same_contents(a, b):
    with safe_open(a, framework="np") as fa, safe_open(b, framework="np") as fb:
        if fa.metadata() != fb.metadata() or set(fa.keys()) != set(fb.keys()):
            return False
        for k in fa.keys():
            x, y = fa.get_tensor(k), fb.get_tensor(k)
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                return False
    return True


def swift_expected():
    """Mirror of swiftWrittenTensors() in SafeTensorsTests.swift."""
    f32 = np.array([0.5, -1.25, 3.0e-39, np.inf, -0.0, 1e30], dtype=np.float32).reshape(2, 3)
    return {
        "a.weight": f32,
        "b.ids": np.array([[0, -1], [2147483647, -2147483648]], dtype=np.int32),
        "c.scalar": np.array(3.5, dtype=np.float32),
        "d.empty": np.zeros((0,), dtype=np.float32),
        "e.rank4": (np.arange(6, dtype=np.float32) * 0.25 - 0.5).reshape(1, 2, 1, 3),
        "f.empty_ids": np.zeros((2, 0), dtype=np.int32),
        "g.nan": np.array([np.nan, -np.nan], dtype=np.float32),
    }, {"framework": "LongMixer", "note": "swift_written fixture \u2713"}


def verify_swift_written(filename, int_dtype):
    path = os.path.join(FIXTURES, filename)
    if not os.path.exists(path):
        print(f"MISSING {path}: run `LONGMIXER_WRITE_FIXTURES=1 swift test --filter SafeTensorsTests` first")
        return False
    expected, expected_meta = swift_expected()
    loaded = np_load_file(path)
    ok = True
    if set(loaded) != set(expected):
        print(f"{filename}: names {sorted(loaded)} != {sorted(expected)}")
        return False
    for name, want in expected.items():
        got = loaded[name]
        if want.dtype == np.int32:
            want = want.astype(int_dtype)
        same = got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()
        if not same:
            print(f"{filename}: {name}: got {got.dtype} {got.shape} {got!r}, want {want.dtype} {want.shape} {want!r}")
            ok = False
    with safe_open(path, framework="np") as f:
        meta = f.metadata()
    if meta != expected_meta:
        print(f"{filename}: metadata {meta} != {expected_meta}")
        ok = False
    # torch reads it too.
    from safetensors.torch import load_file as torch_load_file
    t = torch_load_file(path)
    assert torch.equal(t["e.rank4"], torch.from_numpy(expected["e.rank4"]))
    print(f"{filename}: {'OK' if ok else 'MISMATCH'} ({len(loaded)} tensors)")
    return ok


if __name__ == "__main__":
    print(f"torch {torch.__version__}, safetensors {safetensors.__version__}, numpy {np.__version__}")
    os.makedirs(FIXTURES, exist_ok=True)
    python_written()
    ok = verify_swift_written("swift_written.safetensors", np.int32)
    ok = verify_swift_written("swift_written_i64.safetensors", np.int64) and ok
    sys.exit(0 if ok else 1)
