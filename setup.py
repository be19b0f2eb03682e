from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="robustsam-restore",
    version="0.1.0",
    description="RobustSAM (CVPR 2024) as a degradation-invariant segmentation prior for image restoration",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["robustsam_prior*", "restore*", "eval*", "pipelines*"]),
    # every data file is listed here; include_package_data would also take what a MANIFEST.in names and
    # makes setuptools warn, at length, that the data folders (pipelines/schema, restore/weights) look
    # like packages it was not told about
    package_data={
        "pipelines": ["*.yml", "basicsr/*.yml", "schema/*.json"],
        "restore": ["weights/*.safetensors", "weights/*.json"],
        "robustsam_prior": ["weights/*.safetensors"],
    },
    include_package_data=False,
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "segment-anything>=1.0",
        # BasicSR 1.4.2 is the current PyPI release; it is imported only through
        # robustsam_prior._basicsr.import_basicsr(), which supplies the torchvision module it
        # expects (see README, "BasicSR and torchvision >= 0.17").
        "basicsr==1.4.2",
        # kornia: the BT.601 luma of the Y-channel metrics and the batched kernel blur of GPU tensors
        # (README, "kornia": where OpenCV stays instead, and why)
        "kornia>=0.7",
        "lpips>=0.1.4",
        "scikit-image>=0.21",
        "scipy>=1.10",
        "numpy>=1.24",
        "pillow>=10",
        "opencv-python-headless>=4.8",
        "click>=8.1",
        "pyyaml>=6",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "tifffile>=2023.1",
        "matplotlib>=3.7",
        "tensorboard>=2.14",
    ],
    # train: scikit-learn only for the two photos it ships (china.jpg, flower.jpg) that the default dehazing
    # recipe trains on (pipelines/train_default_dehaze.yml)
    # hub: official RobustSAM checkpoints by name (--prior-checkpoint robustsam-vit-b) through the Hugging Face
    # Hub cache; the tests use it offline against a cache they lay out themselves
    extras_require={
        # pycocotools: segment's masks.json holds compressed COCO RLE where it is installed (the tests cover both)
        "test": ["pytest>=7", "pytest-xdist>=3.5", "ruff>=0.5", "huggingface_hub>=0.23", "pycocotools>=2.0.7"],
        "train": ["scikit-learn"],
        "hub": ["huggingface_hub>=0.23"],
    },
    entry_points={"console_scripts": ["robustsam-restore=pipelines.cli:main"]},
)
