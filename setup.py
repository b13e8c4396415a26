"""espnet_mpq: one-stage mixed-precision quantization of s3prl speech foundation models in ESPnet."""
from setuptools import find_packages, setup

setup(
    name="espnet_mpq",
    version="0.1.0",
    description="One-stage mixed-precision weight quantization of wav2vec2/HuBERT upstreams for ESPnet ASR",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["espnet_mpq", "espnet_mpq.*"]),
    package_data={"espnet_mpq.core": ["native_mixture.c"]},  # built on first use (espnet_mpq.core.native)
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "espnet>=202412",
        "espnet-s3prl",  # the ESPnet fork; provides the module `s3prl`
        "jiwer>=3.0",
        "pyyaml",
        "sentencepiece",
        "soundfile",
    ],
    extras_require={"test": ["pytest"], "plot": ["matplotlib"]},
    entry_points={},
)
