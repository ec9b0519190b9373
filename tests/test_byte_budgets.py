"""Byte budgets for microcontrollers: ``memory:int8`` and ``flash[:int8]`` metrics, KB/MB/KiB units,
and the errors for a byte budget on a metric without bytes or a precision a metric does not take."""

import pytest

from matchnas import cost
from matchnas.errors import MatchnasError
from matchnas.search.budgets import check_metric, format_cost, parse_budgets, resolve_metric


def test_byte_units_are_decimal_and_binary():
    assert parse_budgets("256KB,1MB", "memory:int8") == [256e3, 1e6]
    assert parse_budgets("256KiB,1MiB", "flash:int8") == [256 * 1024, 1024**2]
    assert parse_budgets("4M,8M", "flops") == [4e6, 8e6]  # the plain suffixes are unchanged


@pytest.mark.parametrize("metric", ["flops", "params", "latency", "latency:lut.json"])
def test_a_byte_budget_for_a_metric_without_bytes_is_one_line(metric):
    with pytest.raises(MatchnasError, match=r"'256KB' is in bytes but metric .* has no bytes") as err:
        parse_budgets("256KB", metric)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec", ["flops:int8", "memory:int4", "flash:lut.json", "sram"])
def test_unknown_metric_or_precision_is_refused(spec):
    with pytest.raises(MatchnasError, match="unknown metric"):
        check_metric(spec)


def test_int8_metrics_are_the_cost_model_at_one_byte(tiny_supernet):
    space, k = tiny_supernet.space, tiny_supernet.num_classes
    for config in (space.min(), space.max()):
        memory8, memory32 = resolve_metric("memory:int8", tiny_supernet), resolve_metric("memory", tiny_supernet)
        assert memory32(config) == 4 * memory8(config) == cost.peak_memory(space, config, k)
        flash8, flash32 = resolve_metric("flash:int8", tiny_supernet), resolve_metric("flash", tiny_supernet)
        channels = sum(layer.out_channels for layer in cost.layers(space, config, k) if layer.name != "pool")
        weights = cost.params(space, config, k) - sum(
            (2 if layer.batch_norm else 1) * layer.out_channels for layer in cost.layers(space, config, k) if layer.name != "pool")
        assert flash8(config) == weights + 28 * channels and flash32(config) == 4 * weights + 4 * channels
    assert format_cost(256e3, "memory:int8") == "256.00K"


def test_the_shipped_mcu_space_has_subnets_under_256kb_sram_and_1mb_flash():
    from matchnas import from_pretrained

    space = from_pretrained("efficientnet-lite0", num_classes=10, space="efficientnet-lite0-mcu").space
    assert space.resolutions[0] == 64 and space.resolutions[-1] <= 128
    smallest, largest = space.min(), space.max()
    assert cost.peak_memory(space, smallest, 10, dtype_bytes=1) <= 256e3 and cost.flash_bytes(space, smallest, 10, dtype_bytes=1) <= 1e6
    assert cost.flash_bytes(space, largest, 10, dtype_bytes=1) > 1e6  # the budget has something to choose
