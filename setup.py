"""LE-CLIP: label-efficient CLIP adaptation as a Dassl plugin.

`trainers/` and `datasets/` live at the top of the repository (as in CoOp and its
forks) but install as `leclip.trainers` and `leclip.datasets`, so they never shadow
another distribution's top-level package (HuggingFace `datasets` above all).
"""
from setuptools import setup

setup(
    name="leclip",
    version="0.1.0",
    description="Label-efficient CLIP adaptation (CFSG-CLIP, CCD, CSA and baselines) for Dassl",
    python_requires=">=3.10",  # the pinned torch 2.14 needs 3.10,
    packages=[
        "leclip",
        "leclip.engine",
        "leclip.data",
        "leclip.backbone",
        "leclip.world",
        "leclip.multilabel",
        "leclip.trainers",
        "leclip.datasets",
    ],
    package_dir={
        "leclip": "leclip",
        "leclip.trainers": "trainers",
        "leclip.datasets": "datasets",
    },
    package_data={"leclip.world": ["assets/*.pt"]},
    include_package_data=True,
    install_requires=[
        "torch",
        "torchvision",
        "clip-anytorch",
        "setuptools<81",  # clip imports pkg_resources
        "yacs",
        "tabulate",
        "scikit-learn",
        "scipy",
        "tqdm",
        "Pillow",
        "matplotlib",  # compare.sh --plot, --viz
        "tensorboard",  # the event files of each run, as Dassl writes them
    ],
    extras_require={"test": ["pytest"]},
)
