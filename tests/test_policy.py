"""Usage headers, Retry-After, backoff with full jitter, give-up rules and the throttle pause.

Header shapes from "Messenger Platform rate limits" (2026), as summarised in docs/delivery.md's error table:
``X-App-Usage`` holds whole percentages; ``X-Business-Use-Case-Usage`` maps a business object id to entries
whose ``estimated_time_to_regain_access`` is in minutes.
"""

from __future__ import annotations

import json

import pytest
from requests.structures import CaseInsensitiveDict

from workers.retry import (
    DEFAULT_THROTTLE_WAIT,
    MAX_THROTTLE_WAIT,
    UNRECOGNISED_MAX_ATTEMPTS,
    RetryPolicy,
    throttle_wait,
)
from workers.usage import MIN_FACTOR, Usage, read_usage, retry_after

APP_USAGE = '{"call_count":28,"total_time":25,"total_cputime":12}'
BUC_USAGE = json.dumps({
    "17841400000000001": [
        {"type": "instagram", "call_count": 95, "total_cputime": 20, "total_time": 30,
         "estimated_time_to_regain_access": 3},
    ],
    "104000000000001": [
        {"type": "messenger", "call_count": 10, "total_cputime": 5, "total_time": 97,
         "estimated_time_to_regain_access": 0},
        {"type": "pages", "call_count": 1, "total_cputime": 1, "total_time": 1,
         "estimated_time_to_regain_access": 7},
    ],
})


# --- read_usage ---------------------------------------------------------------------------------------------


def test_no_headers_is_zero() -> None:
    assert read_usage({}) == Usage(0.0, 0.0)


def test_app_usage_takes_the_highest_percentage() -> None:
    usage = read_usage({"X-App-Usage": APP_USAGE})
    assert usage.percent == 28.0
    assert usage.regain_seconds == 0.0


def test_app_usage_at_throttle() -> None:
    assert read_usage({"X-App-Usage": '{"call_count":100,"total_time":4,"total_cputime":3}'}).percent == 100.0


def test_business_use_case_usage_across_objects_and_minutes_to_seconds() -> None:
    usage = read_usage({"X-Business-Use-Case-Usage": BUC_USAGE})
    assert usage.percent == 97.0  # total_time of the messenger entry
    assert usage.regain_seconds == 7 * 60  # the longest estimate, minutes -> seconds


def test_both_headers_combine() -> None:
    usage = read_usage({"X-App-Usage": '{"call_count":99,"total_time":0,"total_cputime":0}',
                        "X-Business-Use-Case-Usage": BUC_USAGE})
    assert usage.percent == 99.0
    assert usage.regain_seconds == 420.0


@pytest.mark.parametrize("app_name", ["x-app-usage", "X-APP-USAGE", "X-App-Usage", "x-App-usage"])
@pytest.mark.parametrize("buc_name", ["x-business-use-case-usage", "X-BUSINESS-USE-CASE-USAGE",
                                      "X-Business-Use-Case-Usage"])
def test_header_names_are_case_insensitive(app_name: str, buc_name: str) -> None:
    usage = read_usage({app_name: '{"call_count":99}', buc_name: BUC_USAGE})
    assert usage == Usage(99.0, 420.0)


def test_reads_a_requests_header_dict() -> None:
    headers = CaseInsensitiveDict({"x-business-use-case-usage": BUC_USAGE, "Content-Type": "application/json"})
    assert read_usage(headers) == Usage(97.0, 420.0)


MALFORMED = [
    "",
    "not json",
    "{",
    "[1, 2, 3]",
    "null",
    "42",
    '"call_count"',
    '{"call_count":"lots","total_time":null,"total_cputime":{}}',
    '{"call_count":[1]}',
]


@pytest.mark.parametrize("value", MALFORMED)
def test_malformed_app_usage_counts_as_zero(value: str) -> None:
    assert read_usage({"X-App-Usage": value}) == Usage(0.0, 0.0)


@pytest.mark.parametrize("value", [
    *MALFORMED,
    '{"123": "instagram"}',
    '{"123": {"call_count": 99}}',
    '{"123": [1, "x", null]}',
    '{"123": [{"call_count":"high","estimated_time_to_regain_access":"soon"}]}',
    '{"123": [{"estimated_time_to_regain_access":[5]}]}',
])
def test_malformed_business_usage_counts_as_zero(value: str) -> None:
    assert read_usage({"X-Business-Use-Case-Usage": value}) == Usage(0.0, 0.0)


def test_a_malformed_header_does_not_hide_a_good_one() -> None:
    assert read_usage({"X-App-Usage": "garbage", "X-Business-Use-Case-Usage": BUC_USAGE}) == Usage(97.0, 420.0)
    assert read_usage({"X-App-Usage": APP_USAGE, "X-Business-Use-Case-Usage": "{"}) == Usage(28.0, 0.0)


def test_partly_malformed_entry_keeps_the_readable_fields() -> None:
    value = '{"1": [{"call_count":"x","total_time":91,"estimated_time_to_regain_access":"?"}]}'
    assert read_usage({"X-Business-Use-Case-Usage": value}) == Usage(91.0, 0.0)


# --- Usage.factor ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("percent", "factor"), [(0, 1.0), (50, 1.0), (80, 1.0), (85, 0.75), (90, 0.5),
                                                 (95, 0.25), (100, MIN_FACTOR), (150, MIN_FACTOR)])
def test_factor(percent: float, factor: float) -> None:
    assert Usage(percent=percent).factor == pytest.approx(factor)


def test_factor_never_increases_with_usage() -> None:
    factors = [Usage(percent=p / 2).factor for p in range(0, 241)]
    assert all(a >= b for a, b in zip(factors, factors[1:], strict=False))
    assert all(MIN_FACTOR <= f <= 1.0 for f in factors)


# --- retry_after ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "seconds"), [
    ({}, 0.0),
    ({"Retry-After": "120"}, 120.0),
    ({"retry-after": "5"}, 5.0),
    ({"RETRY-AFTER": " 7 "}, 7.0),
    ({"Retry-After": "0"}, 0.0),
    ({"Retry-After": "1.5"}, 1.5),
    ({"Retry-After": "-30"}, 0.0),
    ({"Retry-After": ""}, 0.0),
    ({"Retry-After": "soon"}, 0.0),
    ({"Retry-After": "nan"}, 0.0),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # HTTP-date form is not read
    ({"Content-Type": "application/json"}, 0.0),
])
def test_retry_after(headers: dict[str, str], seconds: float) -> None:
    assert retry_after(headers) == seconds


@pytest.mark.parametrize("value", ["inf", "Infinity"])
def test_retry_after_infinity_is_unreadable(value: str) -> None:
    assert retry_after({"Retry-After": value}) == 0.0


# --- RetryPolicy ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [RetryPolicy(), RetryPolicy(base=0.5, cap=10.0), RetryPolicy(base=2.0, cap=60)])
def test_backoff_stays_within_full_jitter_bounds(policy: RetryPolicy) -> None:
    for failures in range(1, 16):
        upper = min(policy.cap, policy.base * 2 ** (failures - 1))
        samples = [policy.backoff(failures) for _ in range(400)]
        assert all(0.0 <= s <= upper for s in samples), failures
        assert len(set(samples)) > 300  # jittered, not a constant delay
        assert max(samples) > 0.8 * upper  # the whole range is used ...
        assert min(samples) < 0.2 * upper  # ... down to almost nothing


def test_backoff_grows_then_caps() -> None:
    policy = RetryPolicy(base=1.0, cap=300.0)
    means = {n: sum(policy.backoff(n) for _ in range(2000)) / 2000 for n in (1, 4, 8, 12, 20)}
    assert means[1] < means[4] < means[8] < means[12]
    assert means[12] == pytest.approx(150, rel=0.15)  # capped: uniform over [0, 300]
    assert means[20] == pytest.approx(150, rel=0.15)


def test_backoff_of_zero_failures_is_bounded_by_base() -> None:
    policy = RetryPolicy(base=3.0)
    assert all(0.0 <= policy.backoff(0) <= 3.0 for _ in range(200))


def test_give_up_by_attempts() -> None:
    policy = RetryPolicy(max_attempts=8)
    for failures in range(8):
        assert policy.give_up(failures, 0.0) is None
    assert "8" in (policy.give_up(8, 0.0) or "")
    assert policy.give_up(9, 0.0)


def test_give_up_by_age() -> None:
    policy = RetryPolicy(max_age=3600)
    assert policy.give_up(1, 3599.9) is None
    assert policy.give_up(1, 3600.0)
    assert policy.give_up(1, 90000.0)
    assert RetryPolicy().give_up(1, 24 * 3600 - 1) is None
    assert RetryPolicy().give_up(1, 24 * 3600)


def test_bounded_errors_stop_at_three() -> None:
    assert UNRECOGNISED_MAX_ATTEMPTS == 3
    policy = RetryPolicy(max_attempts=8)
    assert policy.give_up(1, 0.0, bounded=True) is None
    assert policy.give_up(2, 0.0, bounded=True) is None
    assert policy.give_up(3, 0.0, bounded=True)
    assert policy.give_up(3, 0.0, bounded=False) is None


def test_bounded_never_exceeds_a_smaller_attempt_limit() -> None:
    policy = RetryPolicy(max_attempts=2)
    assert policy.give_up(1, 0.0, bounded=True) is None
    assert policy.give_up(2, 0.0, bounded=True)


def test_bounded_errors_still_give_up_by_age() -> None:
    assert RetryPolicy(max_age=60).give_up(1, 61.0, bounded=True)


# --- throttle_wait --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("retry_after_s", "regain_s", "wait"), [
    (10.0, 180.0, 180.0),
    (300.0, 60.0, 300.0),
    (45.0, 0.0, 45.0),
    (0.0, 420.0, 420.0),
    (2.5, 2.5, 2.5),
    (0.0, 0.0, DEFAULT_THROTTLE_WAIT),
])
def test_throttle_wait(retry_after_s: float, regain_s: float, wait: float) -> None:
    assert throttle_wait(retry_after_s, regain_s) == wait


def test_throttle_wait_default_is_positive() -> None:
    assert DEFAULT_THROTTLE_WAIT > 0


def test_throttle_wait_from_real_headers() -> None:
    headers = {"Retry-After": "60", "X-Business-Use-Case-Usage": BUC_USAGE}
    assert throttle_wait(retry_after(headers), read_usage(headers).regain_seconds) == 420.0


@pytest.mark.parametrize("value", ["1e9", "99999999", "86400"])
def test_an_absurd_retry_after_is_capped(value: str) -> None:
    wait = throttle_wait(retry_after({"Retry-After": value}), 0.0)
    assert wait == MAX_THROTTLE_WAIT == 3600.0
    assert throttle_wait(0.0, 10**9) == MAX_THROTTLE_WAIT  # Meta's regain estimate too
