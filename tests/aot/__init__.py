"""Ahead-of-time compile of every Triton kernel of ``kernels/`` for real NVIDIA targets, with no GPU.

The kernels' own launchers run on ``meta`` tensors (shapes without memory, so 2**31-element inputs
cost nothing); Triton binds and specialises their real arguments and compiles each specialisation
through its whole pipeline down to a cubin with the real ``ptxas``. Only the driver is stood in
(:mod:`aot.standin`), because this machine has neither a GPU nor a CUDA driver.

Entry point: ``python tests/aot_compile.py --json OUT.json`` (see :mod:`aot.run`). It must run
with the Triton interpreter OFF, which is fixed when ``@triton.jit`` decorates a kernel, so the
pytest test (whose process has the interpreter on, tests/conftest.py) runs it in a subprocess.
"""
