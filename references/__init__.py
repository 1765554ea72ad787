"""Independent reference implementations that the tests and benchmarks compare the product against.

- `models`: MobileNetV2 written the torchvision way and MobileNetV1 the timm way (their state_dict layouts),
  for the interop tests and the training-throughput benchmark.
- `tflite_executor`: a plain float executor of `.tflite` graphs (numpy, op by op), for the import tests.

None of this is imported by the product.
"""
