"""Python-based Triton backends (`onnxruntime`, `tensorrt`) that serve the unmodified platform configs on the embedded tritonserver."""
