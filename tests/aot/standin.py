"""A stand-in for Triton's CUDA driver, so that kernels compile for a real GPU target with no GPU.

It exists ONLY because this machine has no GPU and no CUDA driver (``libcuda``): Triton asks its
active driver for the target, the device's shared-memory limit, to load the cubin and to launch
it. Everything else is real: the project's launchers and their arguments, Triton's argument
binding and specialisation, the compiler pipeline (ttir, ttgir, llir, PTX) and ``ptxas``, which
writes the cubin. What this driver does instead of the GPU's:

* ``get_current_target`` reports ``GPUTarget("cuda", arch, 32)`` for the arch under test;
* ``utils.get_device_properties`` reports that arch's per-block shared-memory limit, so Triton's
  own "out of resources" check runs against the real number;
* ``utils.load_binary`` reads the cubin's resource usage with the wheel's ``cuobjdump`` (where
  the real driver calls ``cuModuleLoadData`` and ``cuFuncGetAttribute``) and returns the
  register-limited thread count the driver would report;
* the launcher records (kernel, grid, metadata, resources) and runs nothing.

The current device index is the arch number, so one process can compile for several archs:
Triton keeps one binder and kernel cache per device index.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.backends.driver import DriverBase
from triton.runtime.driver import driver

GRID_LIMITS = (2**31 - 1, 65535, 65535)  # CUDA: x < 2**31, y and z <= 65535


@dataclass(frozen=True)
class ArchLimits:
    """Per-SM and per-block limits (CUDA programming guide, compute capabilities table)."""

    arch: int
    max_shared_per_block: int  # bytes, the opt-in maximum a kernel may request
    registers_per_sm: int = 65536  # 32-bit registers in the register file
    max_registers_per_thread: int = 255
    max_threads_per_block: int = 1024
    register_granularity: int = 256  # registers are allocated per warp in units of 256


ARCH_LIMITS = {
    80: ArchLimits(80, 163 * 1024),
    89: ArchLimits(89, 99 * 1024),
    90: ArchLimits(90, 227 * 1024),
}


@dataclass
class Resources:
    """What one compiled kernel uses: cuobjdump on the cubin, spills from ptxas's ``-v`` log."""

    registers: int
    stack: int  # bytes of stack frame per thread
    local: int  # bytes of local memory per thread (where spills go)
    static_shared: int  # bytes of statically declared shared memory (Triton's is dynamic: metadata.shared)
    spill_stores: int | None  # None: no ptxas log (the cubin came from Triton's cache)
    spill_loads: int | None
    ptxas_registers: int | None  # ptxas's own count, to cross-check the cubin's


@dataclass
class Launch:
    """One launch the stand-in driver received instead of running it."""

    case: str
    kernel: str
    arch: int
    grid: tuple[int, int, int]
    signature: dict[str, str]  # non-constexpr parameters: Triton type (``*fp32``, ``i32``, ``fp32`` ...)
    constexprs: dict[str, Any]
    divisible_by_16: list[str]  # parameters Triton specialised as multiples of 16 (pointers: 16-byte aligned)
    num_warps: int
    num_stages: int
    shared: int  # dynamic shared memory the kernel requests (bytes)
    hash: str
    program_offsets_i32: bool | None  # a program id is multiplied in int32 (None: no TTIR found)
    resources: Resources = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _tool_version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


def ptxas_for(arch: int) -> str:
    """The ptxas Triton's CUDA backend uses for ``arch`` (3.9 takes ``ptxas-blackwell`` from sm_90)."""
    from triton.backends.nvidia import compiler as nvidia

    return nvidia.get_ptxas(arch).path


def toolchain(archs: list[int]) -> dict[str, str]:
    """Versions that decide the compile: triton, torch, and each arch's ptxas."""
    versions = {
        "triton": triton.__version__,
        "torch": torch.__version__,
        "cuobjdump": _tool_version(knobs.nvidia.cuobjdump.path),
    }
    for arch in archs:
        versions[f"ptxas sm_{arch}"] = f"{os.path.basename(ptxas_for(arch))}: {_tool_version(ptxas_for(arch))}"
    return versions


_RES_USAGE = re.compile(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
_PTXAS_SPILLS = re.compile(
    r"Function properties for (\S+)\s*\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, "
    r"(\d+) bytes spill loads\s*\n[^\n]*Used (\d+) registers"
)
_PROGRAM_ID = re.compile(r"(%[\w.]+) = tt\.get_program_id")
_SCALAR_I32_OP = re.compile(r"(%[\w.]+) = arith\.(\w+) (%[\w.]+), (%[\w.]+) : i32\b")


def cubin_resources(name: str, cubin: bytes, ptxas_log: str) -> Resources:
    """Registers, stack, local and static shared memory of ``name`` in ``cubin``; spills from the log."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run(
            [knobs.nvidia.cuobjdump.path, "-res-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    found = {m.group(1): m for m in _RES_USAGE.finditer(out)}
    if name not in found:
        raise RuntimeError(f"cuobjdump -res-usage lists no function {name!r}:\n{out}")
    m = found[name]
    spills = {s.group(1): s for s in _PTXAS_SPILLS.finditer(ptxas_log)}.get(name)
    return Resources(
        registers=int(m.group(2)),
        stack=int(m.group(3)),
        static_shared=int(m.group(4)),
        local=int(m.group(5)),
        spill_stores=int(spills.group(3)) if spills else None,
        spill_loads=int(spills.group(4)) if spills else None,
        ptxas_registers=int(spills.group(5)) if spills else None,
    )


def program_offsets_i32(ttir: str) -> bool:
    """Whether the TTIR multiplies a value derived from ``tt.get_program_id`` (through scalar
    div/rem/add/sub) in 32 bits: a tile offset ``program * BLOCK`` that wraps past 2**31."""
    derived = set(_PROGRAM_ID.findall(ttir))
    for result, op, lhs, rhs in _SCALAR_I32_OP.findall(ttir):  # SSA: definitions come before uses
        if lhs in derived or rhs in derived:
            if op == "muli":
                return True
            if op in ("divsi", "divui", "remsi", "remui", "addi", "subi"):
                derived.add(result)
    return False


def _ttir_of(jit_fn: Any, device: int, metadata: Any) -> str | None:
    """The TTIR of the compiled kernel that owns ``metadata``, from the JIT function's kernel cache
    (Triton stores a kernel there before its first launch)."""
    for kernel in jit_fn.device_caches[device][0].values():
        kernel = kernel.result() if hasattr(kernel, "result") else kernel  # an async compile's future
        if getattr(kernel, "metadata", None) is metadata:
            return kernel.asm.get("ttir")
    return None


def max_threads_per_block(registers: int, limits: ArchLimits) -> int:
    """The register-limited block size, as the driver's CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK
    reports it: registers are allocated per warp, rounded up to the allocation unit."""
    per_warp = -(-max(registers, 1) * 32 // limits.register_granularity) * limits.register_granularity
    return min(limits.max_threads_per_block, limits.registers_per_sm // per_warp * 32)


class _Utils:
    """The part of the driver Triton's ``CompiledKernel`` calls to check limits and load a cubin."""

    def __init__(self, owner: StandInCudaDriver) -> None:
        self.owner = owner

    def get_device_properties(self, device: int) -> dict[str, int]:
        limits = ARCH_LIMITS[device]
        return {
            "max_shared_mem": limits.max_shared_per_block,
            "max_num_regs": limits.registers_per_sm,
            "multiprocessor_count": 132,
            "warpSize": 32,
        }

    def load_binary(self, name: str, cubin: bytes, shared: int, device: int) -> tuple[Any, Any, int, int, int]:
        """(module, function, n_regs, n_spills, n_max_threads) as the real driver returns them; the
        "function" handle is the cubin's :class:`Resources`, which the launcher then records."""
        res = cubin_resources(name, cubin, self.owner.take_ptxas_log())
        spills = res.spill_stores if res.spill_stores is not None else res.local
        return None, res, res.registers, spills, max_threads_per_block(res.registers, ARCH_LIMITS[device])

    def unload_module(self, module: Any) -> None:
        pass


class StandInCudaDriver(DriverBase):
    """Triton's active driver for one CUDA arch, on a machine without one (see the module docstring)."""

    def __init__(self, arch: int) -> None:
        super().__init__()
        if arch not in ARCH_LIMITS:
            raise ValueError(f"no limits known for sm_{arch}; known: {sorted(ARCH_LIMITS)}")
        self.arch = arch
        self.utils = _Utils(self)
        self.launches: list[Launch] = []
        self.case = ""
        self._log = io.StringIO()

    @classmethod
    def is_active(cls) -> bool:
        return False  # never picked by Triton's own driver discovery: installed explicitly

    def map_python_to_cpp_type(self, ty: str) -> str:
        raise NotImplementedError("the stand-in driver builds no C launcher")

    def get_benchmarker(self) -> Any:
        raise NotImplementedError("no GPU to benchmark on (an @triton.autotune kernel cannot be compiled here)")

    def get_current_target(self) -> GPUTarget:
        return GPUTarget("cuda", self.arch, 32)

    def get_active_torch_device(self) -> torch.device:
        return torch.device("meta")

    def get_current_device(self) -> int:
        return self.arch

    def set_current_device(self, device: int) -> None:
        pass

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_device_capability(self, device: int | None = None) -> tuple[int, int]:
        return divmod(self.arch, 10)

    def take_ptxas_log(self) -> str:
        """The ptxas ``-v`` output printed since the last cubin was loaded (Triton prints it when
        TRITON_DUMP_PTXAS_LOG is set; compile and load of one kernel follow each other)."""
        text = self._log.getvalue()
        self._log.seek(0)
        self._log.truncate()
        return text

    @contextlib.contextmanager
    def capturing_ptxas_log(self) -> Iterator[None]:
        previous = sys.stdout
        sys.stdout = self._log
        try:
            yield
        finally:
            sys.stdout = previous

    def launcher_cls(self, src: Any, metadata: Any) -> Any:
        """The launcher Triton builds per compiled kernel: here it records the launch."""
        names = src.fn.arg_names

        def run(grid_x: int, grid_y: int, grid_z: int, stream: Any, function: Resources, *rest: Any) -> None:
            ttir = _ttir_of(src.fn, self.arch, metadata)
            self.launches.append(
                Launch(
                    case=self.case,
                    kernel=metadata.name,
                    arch=self.arch,
                    grid=(grid_x, grid_y, grid_z),
                    signature={k: v for k, v in src.signature.items() if v != "constexpr"},
                    constexprs={names[k[0]]: _plain(v) for k, v in src.constants.items()},
                    divisible_by_16=sorted(names[k[0]] for k, v in src.attrs.items() if ["tt.divisibility", 16] in v),
                    num_warps=metadata.num_warps,
                    num_stages=metadata.num_stages,
                    shared=metadata.shared,
                    hash=metadata.hash,
                    program_offsets_i32=program_offsets_i32(ttir) if ttir else None,
                    resources=function,
                )
            )

        return run


def _plain(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)


def install(arch: int) -> StandInCudaDriver:
    """Make a stand-in for ``arch`` Triton's active driver; ptxas's ``-v`` log is printed for it."""
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
    stand_in = StandInCudaDriver(arch)
    driver.set_active(stand_in)
    return stand_in


@contextlib.contextmanager
def meta_counts_as_gpu() -> Iterator[None]:
    """While the stand-in driver is active, let ``impl='triton'`` pick Triton for ``meta`` tensors.

    ``kernels._dispatch.triton_can_run`` knows CUDA and the interpreter only, so ``FusedRMSprop``
    and ``rmsprop_clip_step`` would refuse meta tensors (the bias and head launchers never ask).
    The launch rules themselves (``kernels._launch``) already treat meta as a GPU. Everything past
    this one question runs unchanged.
    """
    from kernels import _dispatch

    real = _dispatch.triton_can_run

    def can_run(device: torch.device | str) -> bool:
        return torch.device(device).type == "meta" or real(device)

    _dispatch.triton_can_run = can_run
    try:
        yield
    finally:
        _dispatch.triton_can_run = real
