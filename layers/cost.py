"""The V1 paper's cost formulas (Howard et al. 2017, section 3.1), in the paper's notation.

D_K: kernel size, M: input channels, N: output channels, D_F: the spatial size of the output feature map
(the paper assumes stride 1 and "same" padding; for a strided layer use the output size).

- standard convolution:           D_K * D_K * M * N * D_F * D_F          (equation 2)
- depthwise-separable convolution: D_K * D_K * M * D_F * D_F + M * N * D_F * D_F   (equation 5)
- their ratio:                    1/N + 1/D_K^2                          (the reduction, 8-9x for 3x3)
"""


def standard_conv_macs(kernel_size: int, in_ch: int, out_ch: int, feature_size: int) -> int:
    """Multiply-adds of a standard D_K x D_K convolution producing a D_F x D_F x N map from M channels."""
    return kernel_size * kernel_size * in_ch * out_ch * feature_size * feature_size


def depthwise_separable_conv_macs(kernel_size: int, in_ch: int, out_ch: int, feature_size: int) -> int:
    """Multiply-adds of a depthwise D_K x D_K convolution followed by a 1x1 pointwise one."""
    depthwise = kernel_size * kernel_size * in_ch * feature_size * feature_size
    pointwise = in_ch * out_ch * feature_size * feature_size
    return depthwise + pointwise


def depthwise_separable_reduction(kernel_size: int, out_ch: int) -> float:
    """Cost of the separable pair relative to the standard convolution: 1/N + 1/D_K^2."""
    return 1 / out_ch + 1 / kernel_size**2
