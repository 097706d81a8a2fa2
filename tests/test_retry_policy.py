"""The pool's pure decisions: retry delays, demotion, retry and crash limits, run-time limits."""
from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastsched import retry_policy
from fastsched.errors import ConfigError
from fastsched.jobs import ClaimedJob, Failure, Retry
from fastsched.priority import Priority

NOW = dt.datetime(2024, 5, 1, 12, 0, 0)


def job(priority: int = Priority.HIGH, retrial: int = 0, crashes: int = 0, command: str = "Delivery") -> ClaimedJob:
    return ClaimedJob(7, command, "[]", priority, retrial, crashes)


# --- retry delay ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("friendica", None), (" Friendica ", None), ("0", 0.0), ("0.05", 0.05), ("90", 90.0)],
)
def test_parse_retry_delay(setting, expected):
    assert retry_policy.parse_retry_delay(setting) == expected


@pytest.mark.parametrize("setting", ["", "soon", "-1", "nan", "inf", "1e9"])
def test_parse_retry_delay_rejects_nonsense(setting):
    with pytest.raises(ConfigError, match="retry_delay"):
        retry_policy.parse_retry_delay(setting)


@pytest.mark.parametrize(("n", "low", "high"), [(1, 82, 111), (2, 258, 316), (3, 628, 715), (15, 83536, 83971)])
def test_friendica_delays_match_the_reference_table(n, low, high):
    delays = {retry_policy.retry_delay(n, None, random.Random(seed)) for seed in range(300)}
    assert min(delays) >= low and max(delays) <= high
    assert min(delays) == low and max(delays) == high  # rand(1, 30) reaches both ends


@given(n=st.integers(0, 127), seed=st.integers(0, 2**32))
def test_friendica_delay_is_base_plus_jitter(n, seed):
    delay = retry_policy.retry_delay(n, None, random.Random(seed))
    base = (n + 2) ** 4
    assert base + n <= delay <= base + 30 * n


def test_a_fixed_delay_is_used_as_is():
    assert retry_policy.retry_delay(9, 0.05, random.Random(1)) == 0.05


# --- demotion ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "new_retrial", "expected"),
    [
        (Priority.CRITICAL, 3, Priority.CRITICAL),
        (Priority.CRITICAL, 4, Priority.MEDIUM),  # CRITICAL goes straight to MEDIUM, as in Friendica
        (Priority.HIGH, 4, Priority.MEDIUM),
        (Priority.MEDIUM, 4, Priority.MEDIUM),
        (Priority.MEDIUM, 6, Priority.MEDIUM),
        (Priority.MEDIUM, 7, Priority.LOW),
        (Priority.HIGH, 7, Priority.MEDIUM),  # one step at a time (an elif chain)
        (Priority.LOW, 8, Priority.LOW),
        (Priority.LOW, 9, Priority.NEGLIGIBLE),
        (Priority.MEDIUM, 9, Priority.LOW),
        (Priority.NEGLIGIBLE, 15, Priority.NEGLIGIBLE),
    ],
)
def test_demotion_is_one_step(priority, new_retrial, expected):
    assert retry_policy.demote(priority, new_retrial) == expected


# --- after an error ------------------------------------------------------------------------------


def test_an_error_is_retried_later_with_one_more_retrial():
    outcome = retry_policy.after_error(job(retrial=3), "Traceback...\nValueError: x", NOW,
                                    retry_limit=15, fixed_delay=None, rng=random.Random(0))
    assert isinstance(outcome, Retry)
    assert outcome.id == 7 and outcome.retrial == 4 and outcome.crashes == 0
    assert outcome.priority == Priority.MEDIUM  # demoted at retrial 4
    assert 6**4 + 4 <= (outcome.next_try - NOW).total_seconds() <= 6**4 + 120
    assert outcome.error.endswith("ValueError: x")


def test_an_error_honours_a_fixed_delay_and_an_asked_delay():
    fixed = retry_policy.after_error(job(), "e", NOW, retry_limit=15, fixed_delay=0.05, rng=random.Random(0))
    assert fixed.next_try == NOW + dt.timedelta(seconds=0.05)
    asked = retry_policy.after_error(job(), "e", NOW, retry_limit=15, fixed_delay=0.05, rng=random.Random(0), delay=30)
    assert asked.next_try == NOW + dt.timedelta(seconds=30)


def test_past_the_retry_limit_the_job_fails_with_its_last_error():
    outcome = retry_policy.after_error(job(retrial=2, crashes=1), "RuntimeError: boom", NOW,
                                    retry_limit=2, fixed_delay=None, rng=random.Random(0))
    assert isinstance(outcome, Failure)
    assert outcome.retrial == 2 and outcome.crashes == 1
    assert "RuntimeError: boom" in outcome.error and "3 attempts" in outcome.error and "retry limit 2" in outcome.error


def test_a_retry_limit_of_zero_fails_at_the_first_error():
    assert isinstance(
        retry_policy.after_error(job(), "e", NOW, retry_limit=0, fixed_delay=None, rng=random.Random(0)), Failure
    )


def test_a_huge_error_is_cut_keeping_its_end():
    text = "Traceback\n" + "x" * 100_000 + "\nValueError: the end"
    outcome = retry_policy.after_error(job(), text, NOW, retry_limit=5, fixed_delay=0, rng=random.Random(0))
    assert len(outcome.error) <= retry_policy.MAX_ERROR_CHARS
    assert outcome.error.startswith("Traceback") and outcome.error.endswith("ValueError: the end")


# --- defer ---------------------------------------------------------------------------------------


def test_defer_counts_a_retrial_and_demotes_but_keeps_no_error():
    outcome = retry_policy.after_defer(job(Priority.CRITICAL, retrial=3), None, NOW,
                                    retry_limit=15, fixed_delay=None, rng=random.Random(0))
    assert isinstance(outcome, Retry)
    assert outcome.retrial == 4 and outcome.priority == Priority.MEDIUM and outcome.error is None


def test_defer_with_its_own_delay():
    outcome = retry_policy.after_defer(job(), 2.5, NOW, retry_limit=15, fixed_delay=None, rng=random.Random(0))
    assert outcome.next_try == NOW + dt.timedelta(seconds=2.5)


def test_defer_past_the_retry_limit_fails_the_job():
    outcome = retry_policy.after_defer(job(retrial=15), None, NOW, retry_limit=15, fixed_delay=None, rng=random.Random(0))
    assert isinstance(outcome, Failure) and "deferred itself 16 times" in outcome.error


# --- crashes and time limits ---------------------------------------------------------------------


def test_a_crash_requeues_at_once_without_a_retrial():
    outcome = retry_policy.after_crash(job(retrial=2), "killed by signal 9 (SIGKILL)", NOW, crash_limit=3)
    assert isinstance(outcome, Retry)
    assert outcome.next_try == NOW and outcome.retrial == 2 and outcome.crashes == 1
    assert outcome.priority == Priority.HIGH
    assert "signal 9" in outcome.error


def test_at_the_crash_limit_the_job_is_a_poison_pill():
    outcome = retry_policy.after_crash(job(crashes=2), "exit code 3", NOW, crash_limit=3)
    assert isinstance(outcome, Failure)
    assert outcome.crashes == 3 and outcome.error.startswith("killed its worker 3 times")


@pytest.mark.parametrize(
    ("limits", "priority", "expected"),
    [({30: 60}, 30, 3600.0), ({30: 0.01}, 30, 0.6), ({30: 0}, 30, None), ({}, 30, None), ({20: 10}, 30, None)],
)
def test_run_limit_seconds(limits, priority, expected):
    found = retry_policy.run_limit_seconds(limits, priority)
    assert found == (pytest.approx(expected) if expected is not None else None)


def test_a_timeout_is_a_failed_attempt_naming_the_limit():
    outcome = retry_policy.after_timeout(job(Priority.MEDIUM), 0.01, NOW, retry_limit=15, fixed_delay=0, rng=random.Random(0))
    assert isinstance(outcome, Retry) and outcome.retrial == 1 and outcome.crashes == 0
    assert outcome.error == "exceeded the 0.01-minute run-time limit for priority 30 (MEDIUM)"
    final = retry_policy.after_timeout(job(Priority.HIGH, retrial=1), 10, NOW, retry_limit=1, fixed_delay=0,
                                    rng=random.Random(0))
    assert isinstance(final, Failure) and "10-minute run-time limit for priority 20 (HIGH)" in final.error


def test_unknown_commands_are_handed_back_until_the_retry_limit_and_bad_arguments_fail_at_once():
    rng = random.Random(1)
    back = retry_policy.unknown_command(job(command="os.system", retrial=1, crashes=2), NOW, retry_limit=3,
                                        fixed_delay=30.0, rng=rng)
    assert isinstance(back, Retry) and (back.retrial, back.crashes) == (2, 2)
    assert back.next_try == NOW + dt.timedelta(seconds=30) and back.error is not None
    assert back.error.startswith("unknown command: os.system (no task of that name is registered")
    done = retry_policy.unknown_command(job(command="os.system", retrial=3), NOW, retry_limit=3, fixed_delay=30.0,
                                        rng=rng)
    assert isinstance(done, Failure) and "unknown command: os.system" in done.error and done.retrial == 3
    bad = retry_policy.bad_arguments(job(), "parameter must be a JSON array of args, got dict")
    assert isinstance(bad, Failure) and bad.retrial == 0 and "JSON array" in bad.error
