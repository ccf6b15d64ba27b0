"""Shared fixtures: the default model (loaded once) and tiny random HF checkpoints."""

from __future__ import annotations

import os

# Tests see 8 fake CPU devices (sharding tests); must be set before JAX starts.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# The suite is bound by XLA:CPU compiles of tiny programs (backend compile was 214 s of a 254 s run of three
# files), and LLVM's optimisation passes are most of a compile: at level 0 the same run compiled in 140 s and
# ran in 187 s. Runtime speed is not what these tests measure. Not on accelerators (the device suite).
if os.environ.get("JAX_PLATFORMS", "cpu") == "cpu" and "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
# XLA:CPU runs the fake devices' collectives on one pool of max(cores, devices) threads, and a sharded
# step can leave more than one collective per device waiting at once (one in the layer loop, one outside
# it). With 8 threads (any machine with <= 8 cores) all can end up waiting, and the rendezvous aborts the
# process after 40 s ("Termination timeout ... Fatal Python error: Aborted"). 32 leave 4 per device.
os.environ.setdefault("PJRT_NPROC", str(max(32, os.cpu_count() or 1)))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def _memory_maps() -> int:
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux
        return 0


@pytest.fixture(autouse=True, scope="module")
def _bounded_compiled_code():
    """XLA:CPU maps every compiled program's code into memory, and the whole suite in one process compiles
    thousands: past the kernel's vm.max_map_count (65530 by default) the next compile segfaults (it did, in
    test_train_step.py, once the asynchronous tests joined). Between modules, once the count is high, the
    compiled programs are dropped (about 10k maps -> under 1k)."""
    yield
    if _memory_maps() > 30_000:
        import gc  # noqa: PLC0415

        jax.clear_caches()
        gc.collect()


def _has_gpu() -> bool:
    try:
        return any(d.platform == "gpu" for d in jax.devices())
    except RuntimeError:
        return False


# The longest test files, longest first (measured, `make test`'s --durations). `-n 2 --dist loadfile` hands a
# worker the next file when it is free, in collection order: with these last (alphabetically several are), one
# worker ran a two-minute file while the other sat idle. Longest first is the classic bound on that tail.
HEAVY_FILES = ("test_async_rl.py", "test_smollm2_gguf.py", "test_train_step.py", "test_resume_fidelity.py",
               "test_parallel_step.py", "test_off_policy.py", "test_trainer_knobs.py", "test_family_training.py",
               "test_sweep.py", "test_logprob_impl.py", "test_mixed_precision.py", "test_sampler.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order
    if _has_gpu():
        return
    required = os.environ.get("RFT_JAX_REQUIRE_GPU") == "1"
    for item in items:
        if "gpu" in item.keywords:
            if required:
                item.fixturenames.append("_no_gpu_seen")
            else:
                item.add_marker(pytest.mark.skip(reason="needs a GPU"))


@pytest.fixture
def _no_gpu_seen():
    """benchmarks/device_suite.sh sets RFT_JAX_REQUIRE_GPU=1 on a GPU machine: there a GPU test that finds no
    GPU (a CUDA plugin that did not start) fails rather than skips."""
    pytest.fail("RFT_JAX_REQUIRE_GPU=1, but JAX sees no GPU: " + ", ".join(str(d) for d in jax.devices()))


@pytest.fixture(scope="session")
def smollm2():
    """(config, float32 params, tokenizer) of the default model, from its GGUF."""
    from rft_jax.model import DEFAULT_MODEL, load_model
    from rft_jax.model.tokenizer import load_tokenizer

    cfg, params = load_model(DEFAULT_MODEL, dtype=jax.numpy.float32)
    return cfg, params, load_tokenizer(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def smollm2_gguf_path():
    from rft_jax.model import DEFAULT_MODEL, resolve_model_path

    return resolve_model_path(DEFAULT_MODEL)
