"""streamer: video -> Triton Inference Server (Faster R-CNN) -> annotated video."""

__version__ = "0.1.0"
