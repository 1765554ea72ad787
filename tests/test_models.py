"""MobileNetV1 / V2 against the papers' tables and the counts known from torchvision, timm and Google."""

import pytest
import torch
from torch import nn

from mobilenet import MobileNetV1, MobileNetV2, create_model, model_summary
from mobilenet.flops import count_macs
from mobilenet.summary import format_summary
from mobilenet.summary import main as summary_main


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Parameter counts at 1000 classes: torchvision (V2 1.0), timm / Google's releases (the rest).
@pytest.mark.parametrize(
    "arch, width, expected",
    [
        ("v1", 1.0, 4_231_976),
        ("v1", 0.75, 2_585_560),
        ("v1", 0.5, 1_331_592),
        ("v1", 0.25, 470_072),
        ("v2", 1.0, 3_504_872),
        ("v2", 0.75, 2_636_424),
        ("v2", 0.5, 1_968_680),
        ("v2", 0.35, 1_677_128),
        ("v2", 1.4, 6_108_776),
    ],
)
def test_parameter_counts(arch, width, expected):
    assert n_params(create_model(arch, width_mult=width, num_classes=1000)) == expected


def test_parameter_count_at_200_classes():
    assert n_params(create_model("v1", num_classes=200)) == 3_411_976


# Multiply-adds (conv + linear) from the papers' tables and Google's published figures.
MAC_TABLE = [
    ("v1", 1.0, 224, 568.7e6),
    ("v1", 1.0, 192, 418.1e6),
    ("v1", 1.0, 160, 290.7e6),
    ("v1", 1.0, 128, 186.4e6),
    ("v1", 0.75, 224, 325.4e6),
    ("v1", 0.5, 224, 149.5e6),
    ("v1", 0.25, 224, 41.0e6),
    ("v2", 1.0, 224, 300.8e6),
    ("v2", 1.0, 192, 221.3e6),
    ("v2", 1.0, 160, 154.1e6),
    ("v2", 1.0, 128, 99.1e6),
    ("v2", 1.0, 96, 56.3e6),
    ("v2", 0.75, 224, 209.1e6),
    ("v2", 0.5, 224, 97.1e6),
    ("v2", 0.35, 224, 59.3e6),
    ("v2", 1.4, 224, 582.2e6),
]


@pytest.mark.parametrize("arch, width, resolution, expected", MAC_TABLE)
def test_multiply_adds_fvcore(arch, width, resolution, expected):
    model = create_model(arch, width_mult=width, num_classes=1000)
    total, unsupported = count_macs(model, resolution)
    assert total == pytest.approx(expected, rel=0.005)
    # The ops fvcore leaves out are exactly the element-wise ones the papers do not count either.
    expected_unsupported = {"aten::hardtanh_": 27} if arch == "v1" else {"aten::hardtanh_": 35, "aten::add": 10}
    assert unsupported == expected_unsupported
    # Our own per-layer count (model_summary) is a second computation of the same total.
    assert model_summary(model, resolution)[1]["macs"] == total


def test_v1_paper_activation_relu_is_counted_the_same():
    model = create_model("v1", num_classes=1000, activation="ReLU")
    assert isinstance(model.features[1].conv_dw.act, nn.ReLU)
    total, unsupported = count_macs(model, 224)
    assert total == count_macs(create_model("v1", num_classes=1000), 224)[0]
    assert unsupported == {}  # fvcore silently ignores relu (it reports hardtanh, ReLU6's op)


# V1 Table 1: output (channels, size) after the stem and after each depthwise-separable block at 224.
V1_TABLE1_OUTPUTS = [(32, 112), (64, 112), (128, 56), (128, 56), (256, 28), (256, 28), (512, 14)]
V1_TABLE1_OUTPUTS += [(512, 14)] * 5 + [(1024, 7), (1024, 7)]
# V2 Table 2: output (channels, size) of the stem, each of the 17 bottlenecks, and the 1x1 conv at 224.
V2_TABLE2_OUTPUTS = [(32, 112), (16, 112)] + [(24, 56)] * 2 + [(32, 28)] * 3 + [(64, 14)] * 4 + [(96, 14)] * 3
V2_TABLE2_OUTPUTS += [(160, 7)] * 3 + [(320, 7), (1280, 7)]


@pytest.mark.parametrize("arch, table", [("v1", V1_TABLE1_OUTPUTS), ("v2", V2_TABLE2_OUTPUTS)])
def test_stage_output_shapes_match_paper_tables(arch, table):
    model = create_model(arch, num_classes=1000).eval()
    x = torch.zeros(1, 3, 224, 224)
    shapes = []
    with torch.no_grad():
        for layer in model.features:
            x = layer(x)
            shapes.append((x.shape[1], x.shape[2]))
    assert shapes == table
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_v2_residuals_exactly_where_shape_is_kept():
    model = create_model("v2", num_classes=10)
    flags = [block.use_residual for block in model.features[1:-1]]
    # Per group of Table 2: every repeat after the first has a shortcut; the first never (channels change).
    assert flags == [i > 0 for n in (1, 2, 3, 4, 3, 3, 1) for i in range(n)]  # n of each Table 2 row


@pytest.mark.parametrize("resolution", [96, 128, 161, 224, 257])
@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_any_resolution(arch, resolution):
    model = create_model(arch, num_classes=7, width_mult=0.25).eval()
    assert model(torch.randn(2, 3, resolution, resolution)).shape == (2, 7)


def test_v1_channel_rule_is_googles():
    model = create_model("v1", width_mult=0.25, num_classes=10)
    assert model.features[0].conv.out_channels == 8  # max(int(32 * 0.25), 8)
    assert model.features[-1].conv_pw.conv.out_channels == 256
    model = create_model("v1", width_mult=0.1, num_classes=10)
    assert model.features[0].conv.out_channels == 8 and model.features[1].conv_pw.conv.out_channels == 8


def test_v2_last_channels_never_below_1280():
    assert create_model("v2", width_mult=0.5).num_features == 1280
    assert create_model("v2", width_mult=1.4).num_features == 1792


def test_create_model_errors_name_valid_choices():
    with pytest.raises(ValueError, match=r"\['v1', 'v2'\]"):
        create_model("v3")
    for width in (0, -1, 4.5):
        with pytest.raises(ValueError, match=r"\(0, 4\]"):
            create_model("v2", width_mult=width)
    with pytest.raises(ValueError, match="ReLU6"):
        create_model("v1", activation="gelu")


def test_create_model_rebuilds_from_config():
    model = create_model("v2", width_mult=0.75, num_classes=13, padding="tf_same", dropout=0.1)
    rebuilt = create_model(**model.config)
    assert type(rebuilt) is MobileNetV2 and rebuilt.config == model.config
    assert [k for k in rebuilt.state_dict()] == [k for k in model.state_dict()]
    assert isinstance(create_model("v1", num_classes=3), MobileNetV1)


def test_weight_init_follows_reference():
    model = create_model("v2", num_classes=1000)
    conv = model.features[5].conv_pw.conv
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    assert torch.all(model.features[5].conv_pw.bn.weight == 1) and torch.all(model.features[5].conv_pw.bn.bias == 0)
    assert model.classifier.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(model.classifier.bias == 0)


def test_reset_classifier():
    model = create_model("v1", num_classes=1000)
    model.reset_classifier(5)
    assert model.classifier.out_features == 5 and model.config["num_classes"] == 5
    model.reset_classifier(0)
    assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 1024)


def test_model_summary_rows_follow_table1(capsys):
    rows, totals = model_summary(create_model("v1", num_classes=1000), 224)
    # Table 1: 1 + 13 * 2 conv rows, avg pool, fc.
    assert len(rows) == 29
    assert (rows[0].operator, rows[0].input_shape, rows[0].output_shape) == (
        "conv 3x3 s2",
        (3, 224, 224),
        (32, 112, 112),
    )
    assert rows[1].operator == "conv dw 3x3 s1" and rows[2].operator == "conv 1x1 s1"
    assert rows[-2].operator == "avg pool (global)" and rows[-1].operator == "fc"
    assert totals["params"] == 4_231_976
    v2_rows, _ = model_summary(create_model("v2", num_classes=1000), 224)
    assert v2_rows[2].operator == "conv 1x1 s1 linear"
    summary_main(["--arch", "v1", "--width", "0.75", "--resolution", "192"])
    out = capsys.readouterr().out
    assert "conv dw 3x3 s2" in out and "total" in out
    assert format_summary(rows, totals).splitlines()[-1].split()[-2:] == ["4,231,976", "568,740,352"]
