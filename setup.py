from setuptools import find_packages, setup

setup(
    name="wgan-triton",
    version="0.1.0",
    description="WGAN (weight clipping) trainer for CIFAR-10 horses with Triton kernels on the hot paths",
    python_requires=">=3.10",
    packages=find_packages(include=["kernels", "kernels.*", "wgan", "wgan.*"]),
    install_requires=[
        # torch is installed by the Makefile first (CPU wheel where there is no GPU); a range
        # here never replaces an installed torch.
        "torch>=2.4",
        "triton>=3.0; platform_system == 'Linux'",
        "numpy",
        "click>=8",
        "tqdm",
        "matplotlib",
        "pillow",
        # FID/KID maths (wgan.fid.scores); used with our own feature network, so without
        # torchvision or torch-fidelity
        "torchmetrics>=1.9",
        # the sweep report's statistics (Wilson intervals, Fisher's exact test; wgan.report.sweep)
        "scipy",
    ],
    # W&B and YAML configs are optional, so the package installs on an offline GPU image that lacks
    # them (the trainer says how to get them when asked for them); `make install` takes both.
    extras_require={
        "wandb": ["wandb"],
        "yaml": ["pyyaml"],
        "dev": ["wandb", "pyyaml", "pytest", "pytest-benchmark", "ruff==0.17.6", "expecttest", "scipy", "safetensors"],
    },
    entry_points={
        "console_scripts": [
            "wgan-train=wgan.train:main",
            "wgan-report=wgan.report.__main__:main",
            "wgan-check=wgan.check:main",
            "wgan-sample=wgan.sample:main",
        ]
    },
)
