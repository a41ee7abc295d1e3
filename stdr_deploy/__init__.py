"""stdr-deploy: deploy a scene-text OCR pipeline onto NVIDIA Triton, fitted to the host."""

__version__ = "0.1.0"
