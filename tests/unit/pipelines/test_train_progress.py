"""Rank 0's progress line: the epoch out of the budget, the best so far, and an ETA that is an
upper bound (the rest of the budget at the pace so far)."""

from ucd.pipelines.train_worker import progress_line


def _metrics(epoch, stopped=False):
    return {
        "epoch": epoch,
        "train_loss": 3.5,
        "train_rec_loss": 5.9,
        "train_distill_loss": 0.07,
        "val_ndcg@10": 0.0458,
        "best_val_ndcg@10": 0.0565,
        "best_epoch": 11,
        "stopped": float(stopped),
    }


def test_the_eta_is_the_rest_of_the_budget_at_the_pace_so_far():
    line = progress_line(_metrics(epoch=17), epochs=25, seconds_per_epoch=20.0)
    # 7 epochs left (18..24) at 20 s each: 140 s.
    assert line.startswith("[train] epoch 18/25 ")
    assert "best 0.0565 at epoch 12" in line
    assert line.endswith("20.0s/epoch  ETA <= 2m20s")


def test_a_stopped_run_says_done_instead_of_an_eta():
    line = progress_line(_metrics(epoch=13, stopped=True), epochs=200, seconds_per_epoch=2.0)
    assert line.endswith("done") and "ETA" not in line
