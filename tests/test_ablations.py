"""bench/ablations.py: the table is mean ± std over seeds, the chart is drawn, and bad variant specs are refused."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import ablations  # noqa: E402


def _metrics(i2t, t2i):
    return {"i2t": {"label_f1_macro": i2t, "bleu1": 0.5}, "t2i": {"label_acc": 0.8, "label_f1_macro": t2i, "fd_oracle": 10.0}}


def test_table_reports_mean_and_population_std_over_seeds(tmp_path):
    results = {"full": [_metrics(0.2, 0.4), _metrics(0.4, 0.6)], "causal": [_metrics(0.1, 0.0)]}
    table = ablations.markdown_table(results)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert "0.300 ± 0.100" in rows["full"] and "0.500 ± 0.100" in rows["full"]   # i2t F1, t2i F1 (np.std, ddof 0)
    assert "0.100 ± 0.000" in rows["causal"] and "| - |" in rows["causal"]          # BLEU-2 missing -> "-"
    png = str(tmp_path / "chart.png")
    ablations.bar_chart(results, png)
    assert os.path.getsize(png) > 1000


def test_variant_without_flags_separator_is_refused(capsys):
    with pytest.raises(SystemExit):
        ablations.main(["--variant", "no-equals-sign", "--out", "/nonexistent"])
    assert "NAME=FLAGS" in capsys.readouterr().err
