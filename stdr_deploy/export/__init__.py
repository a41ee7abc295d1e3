"""torch -> ONNX in fp32: export, check, simplify, prove parity, and cache the result by content.

One module per concern: `cache` (content-addressed, locked cache folders), `graph` (torch
export and the checks of a graph), `simplify` (the simplifiers' candidates), `parity` (ONNX
Runtime against the reference) and `fp32` (the steps in order, the cache key and the report).
The fp16 and int8 graphs are made from an fp32 export by `stdr_deploy.precision` and
`stdr_deploy.quantize`; `stdr_deploy.onnx_files` hands out the file for any precision.
"""
