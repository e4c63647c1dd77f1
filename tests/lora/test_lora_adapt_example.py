"""``launch/lora_adapt.py`` end to end at a tiny size: pre-train, LoRA-adapt online to
flipped labels, and the adapted loss goes below the loss at the start of adaptation."""

import pytest

from launch.lora_adapt import AdaptConfig, main, parse

TINY = dict(n_rec=16, batch_size=8, pretrain_steps=30, adapt_steps=30, n_cues=3, cue_len=3, gap=2, delay=4,
            recall=3, log_every=5)


@pytest.mark.usefixtures("optax_promotion")  # launch.lora_adapt trains with optax.adam
# d_rtrl end to end in the slow pass (11.5 CPU s, 2026-12-02); es_d_rtrl (4.6 s) stays
@pytest.mark.parametrize("algorithm", [pytest.param("d_rtrl", marks=pytest.mark.slow), "es_d_rtrl"])
def test_adaptation_lowers_the_loss_on_the_shifted_task(algorithm, capsys):
    losses = main(AdaptConfig(algorithm=algorithm, **TINY))
    start, end = losses["adapt"][:5], losses["adapt"][-5:]
    assert sum(end) / 5 < 0.5 * sum(start) / 5
    # flipping the labels hurts the pre-trained net: adaptation starts above where pre-training ended
    assert sum(start) / 5 > sum(losses["pretrain"][-5:]) / 5
    out = capsys.readouterr().out
    assert "trainable parameters instead of" in out and "adaptation: loss" in out


def test_cli_parses_and_validates():
    cfg = parse(["--rank", "2", "--algorithm", "es_d_rtrl"])
    assert cfg.rank == 2 and cfg.algorithm == "es_d_rtrl"
    with pytest.raises(ValueError, match="'rank'"):
        AdaptConfig(rank=0)
