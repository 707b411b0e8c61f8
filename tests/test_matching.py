"""The Fellegi-Sunter matcher: comparison levels, scoring, tf adjustment, EM, blocking, settings (pure)."""

from __future__ import annotations

import json
import math
import random
import time
from collections import defaultdict
from datetime import date, timedelta
from typing import Any

import pytest
import yaml

from simpul.streams.matching import (
    NULL_LEVEL,
    BlockingRule,
    DateComparison,
    ExactMatch,
    FellegiSunterModel,
    KelurahanComparison,
    MatchSettings,
    NameComparison,
    NikComparison,
    Outcome,
    PhoneComparison,
    TermFrequencies,
    candidate_pairs,
    comparison_from_dict,
    comparison_vectors,
    default_settings,
    estimate_u,
    expectation_maximisation,
    train,
)

# --- synthetic citizens ---------------------------------------------------------------------------

COMMON_FEMALE = ["SITI", "NUR", "DEWI", "SRI"]
COMMON_MALE = ["MUHAMMAD", "AHMAD", "ABDUL"]
RARE = (
    "AMINAH RAHMAWATI SUSANTI HIDAYAT FIRMANSYAH KURNIAWAN MAULANA SAPUTRA LESTARI WULANDARI "
    "PERMANA SETIAWAN HASANAH FAUZIAH ROHMAN SOLEH JUBAEDAH MARYAM SUHENDRA SURYADI YULIANTI "
    "HERMAWAN NURHAYATI SUPRIATNA MULYADI KOMARUDIN SARIPAH ASEP ENDANG UJANG ROSITA ISKANDAR "
    "FADILAH ZAKARIA BAHRUDIN JAENUDIN MASTURAH ROHAYATI SUBAGJA TARMIZI WAHYUDI YUSUF ZAENAL "
    "KHOIRUNNISA LUTFIAH MUSLIHAT NAWAWI QOMARIAH RIDWAN SAMSUDIN TUBAGUS ULFAH WARDAH"
).split()
KELURAHAN = [f"KELURAHAN {n:02d}" for n in range(1, 68)]
SOURCES = ["dukcapil", "disnaker", "dinsos"]


def _person(rng: random.Random, pid: int, household: dict[str, Any]) -> dict[str, Any]:
    sex = rng.choice("LP")
    tokens = [rng.choice(COMMON_FEMALE if sex == "P" else COMMON_MALE)] if rng.random() < 0.5 else []
    tokens += rng.sample(RARE, rng.choice((1, 2, 2, 3)))
    birth = date(1950, 1, 1) + timedelta(days=rng.randrange(60 * 365))
    day = birth.day + (40 if sex == "P" else 0)
    nik = f"36730{rng.randint(1, 6)}{day:02d}{birth.month:02d}{birth.year % 100:02d}{rng.randint(1, 9999):04d}"
    phone = f"628{rng.randint(10**9, 10**10 - 1)}" if rng.random() < 0.7 else None
    return {
        "person_id": pid,
        "nik": nik,
        "name": " ".join(tokens),
        "name_tokens": tuple(tokens),
        "birth_date": birth,
        "sex": sex,
        "phone": phone,
        **household,
    }


def _household(rng: random.Random) -> dict[str, Any]:
    return {
        "kk": f"3673{rng.randint(10**11, 10**12 - 1)}",
        "kelurahan": rng.choice(KELURAHAN),
        "rt": f"{rng.randint(1, 15):03d}",
        "rw": f"{rng.randint(1, 10):03d}",
    }


def _typo(rng: random.Random, text: str) -> str:
    """One letter replaced."""
    i = rng.randrange(len(text))
    return text[:i] + rng.choice("AEIOUNRSTK") + text[i + 1 :]


def _duplicate(rng: random.Random, person: dict[str, Any]) -> dict[str, Any]:
    """Another agency's copy of a person, with the errors agency systems show."""
    rec = dict(person)
    r = rng.random()
    if r < 0.08:
        i = rng.randrange(16)
        rec["nik"] = rec["nik"][:i] + str((int(rec["nik"][i]) + rng.randint(1, 9)) % 10) + rec["nik"][i + 1 :]
    elif r < 0.12:
        i = rng.randrange(15)
        nik = rec["nik"]
        rec["nik"] = nik[:i] + nik[i + 1] + nik[i] + nik[i + 2 :]
    elif r < 0.20:
        rec["nik"] = None
    tokens = list(rec["name_tokens"])
    r = rng.random()
    if r < 0.15:
        k = rng.randrange(len(tokens))
        tokens[k] = _typo(rng, tokens[k])
    elif r < 0.23 and len(tokens) >= 3:
        del tokens[1]
    elif r < 0.28 and len(tokens) >= 2:
        tokens = tokens[1:] + tokens[:1]
    rec["name_tokens"] = tuple(tokens)
    rec["name"] = " ".join(tokens)
    r = rng.random()
    birth = rec["birth_date"]
    if r < 0.05 and birth.day <= 12:
        rec["birth_date"] = birth.replace(month=birth.day, day=birth.month)
    elif r < 0.10:
        rec["birth_date"] = birth.replace(year=birth.year + rng.choice((-1, 1)), day=min(birth.day, 28))
    if rng.random() < 0.4:
        rec["phone"] = None
    elif rec["phone"] and rng.random() < 0.5:
        rec["phone"] = "0" + rec["phone"][2:]  # local format: same last 8 digits
    if rng.random() < 0.3:
        rec["kk"] = None
    if rng.random() < 0.1:
        rec.update(_household(rng))  # moved: new kelurahan, RT/RW and family card
    if rng.random() < 0.1:
        rec["rt"] = rec["rw"] = None
    return rec


def synthetic_records(n_records: int, seed: int = 7, duplicate_share: float = 0.3) -> list[dict[str, Any]]:
    """``n_records`` citizen records, about ``duplicate_share`` of them extra copies of someone."""
    rng = random.Random(seed)
    n_people = int(n_records * (1 - duplicate_share))
    people: list[dict[str, Any]] = []
    while len(people) < n_people:
        household = _household(rng)
        for _ in range(rng.choice((1, 1, 2, 3, 4))):
            people.append(_person(rng, len(people), household))
    people = people[:n_people]
    records = list(people)
    while len(records) < n_records:
        records.append(_duplicate(rng, rng.choice(people)))
    rng.shuffle(records)
    for i, rec in enumerate(records):
        rec["record_id"] = f"r{i}"
        rec["source"] = rng.choice(SOURCES)
    return records


def true_pairs(records: list[dict[str, Any]]) -> set[tuple[int, int]]:
    by_person: defaultdict[int, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        by_person[rec["person_id"]].append(i)
    return {(a, b) for members in by_person.values() for x, a in enumerate(members) for b in members[x + 1 :]}


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return synthetic_records(2000)


# --- comparisons ----------------------------------------------------------------------------------


def test_exact_match_levels() -> None:
    c = ExactMatch("sex")
    assert c.labels == ("null", "exact", "else")
    assert c.level({"sex": "P"}, {"sex": "P"}) == 1
    assert c.level({"sex": "P"}, {"sex": "L"}) == 2
    assert c.level({"sex": "P"}, {"sex": None}) == NULL_LEVEL
    assert c.level({"sex": ""}, {}) == NULL_LEVEL


def test_name_comparison_levels() -> None:
    c = NameComparison("name", thresholds=(0.95, 0.88))
    assert c.labels == ("null", "exact", "jaro_winkler>=0.95", "token_set", "jaro_winkler>=0.88", "else")

    def lvl(a: str, b: str) -> str:
        return c.levels[c.level({"name": a}, {"name": b})].label

    assert lvl("SITI AMINAH", "SITI AMINAH") == "exact"
    assert lvl("SITI RAHMAWATI", "SITI RAHMAWATY") == "jaro_winkler>=0.95"
    assert lvl("AMINAH SITI", "SITI AMINAH") == "token_set"  # order differs
    assert lvl("SITI AMINAH", "SITI NUR AMINAH") == "token_set"  # missing middle token
    assert lvl("SITI", "SITI AMINAH") != "token_set"  # a lone common token is not a token-set match
    assert lvl("HIDAYAT", "HIDAYATI") in ("jaro_winkler>=0.95", "jaro_winkler>=0.88")
    assert lvl("BUDI SANTOSO", "HIDAYAT") == "else"
    assert c.level({"name": "SITI"}, {"name": None}) == NULL_LEVEL
    # Tokens come from name_tokens when present, the name otherwise.
    assert c.level({"name_tokens": ("SITI", "AMINAH")}, {"name": "SITI AMINAH"}) == 1


def test_date_comparison_levels() -> None:
    c = DateComparison("birth_date")
    assert c.labels == ("null", "exact", "typo", "else")
    d = date(1990, 3, 7)

    def lvl(other: Any) -> str:
        return c.levels[c.level({"birth_date": d}, {"birth_date": other})].label

    assert lvl(date(1990, 3, 7)) == "exact"
    assert lvl("1990-03-07") == "exact"
    assert lvl(date(1990, 7, 3)) == "typo"  # day and month swapped
    assert lvl(date(1990, 3, 8)) == "typo"  # one digit
    assert lvl(date(1980, 3, 7)) == "typo"  # year off by one digit
    assert lvl(date(1989, 3, 7)) == "typo"  # year off by one (two digits differ)
    assert lvl(date(1991, 4, 8)) == "else"
    assert lvl("not a date") == "null"


def test_nik_comparison_levels() -> None:
    c = NikComparison()
    nik = "3673014501900001"
    assert c.level({"nik": nik}, {"nik": nik}) == 1
    assert c.level({"nik": nik}, {"nik": "3673014501900002"}) == 2  # substitution
    assert c.level({"nik": nik}, {"nik": "3673104501900001"}) == 2  # adjacent transposition
    assert c.level({"nik": nik}, {"nik": "367301450190001"}) == 2  # dropped digit
    assert c.level({"nik": nik}, {"nik": "3673014501900210"}) == 3
    assert c.level({"nik": nik}, {}) == NULL_LEVEL


def test_phone_and_kelurahan_levels() -> None:
    p = PhoneComparison()
    assert p.level({"phone": "6281234567890"}, {"phone": "6281234567890"}) == 1
    assert p.level({"phone": "6281234567890"}, {"phone": "081234567890"}) == 2
    assert p.level({"phone": "6281234567890"}, {"phone": "6281234567891"}) == 3
    assert p.level({"phone": "12345"}, {"phone": "6281234567891"}) == NULL_LEVEL
    k = KelurahanComparison()
    a = {"kelurahan": "CIPARE", "rt": "002", "rw": "005"}
    assert k.level(a, dict(a)) == 1
    assert k.level(a, dict(a, rt="003")) == 2
    assert k.level(a, dict(a, rt=None)) == 2
    assert k.level(a, dict(a, kelurahan="SUMUR PECUNG")) == 3
    assert k.level(a, {"rt": "002"}) == NULL_LEVEL


def test_comparison_dict_round_trip() -> None:
    for spec in default_settings().comparisons:
        c = comparison_from_dict(spec)
        again = comparison_from_dict(c.to_dict())
        assert again.to_dict() == c.to_dict() and again.labels == c.labels


# --- scoring --------------------------------------------------------------------------------------


def _small_settings(**extra: Any) -> MatchSettings:
    return MatchSettings(
        fields=["name", "birth_date", "sex"],
        comparisons=[
            {"type": "NameComparison", "field": "name", "tokens_field": None, "tf_adjustment": False},
            {"type": "DateComparison", "field": "birth_date"},
            {"type": "ExactMatch", "field": "sex"},
        ],
        blocking_rules=[{"name": "dob", "keys": ["birth_date"]}],
        **extra,
    )


def test_score_matches_hand_calculation() -> None:
    m = [[0.8, 0.05, 0.05, 0.05, 0.05], [0.9, 0.07, 0.03], [0.98, 0.02]]
    u = [[0.001, 0.004, 0.005, 0.01, 0.98], [0.0001, 0.001, 0.9989], [0.5, 0.5]]
    model = FellegiSunterModel(_small_settings(), m, u, lambda_=0.01)
    a = {"name": "SITI AMINAH", "birth_date": date(1990, 3, 7), "sex": "P"}
    b = {"name": "AMINAH SITI", "birth_date": date(1990, 7, 3), "sex": None}
    score = model.score(a, b)
    expected = math.log2(0.01 / 0.99) + math.log2(0.05 / 0.005) + math.log2(0.07 / 0.001)
    assert score.weight == pytest.approx(expected)
    assert score.probability == pytest.approx(2**expected / (1 + 2**expected))
    assert [(c.comparison, c.label) for c in score.contributions] == [
        ("name", "token_set"),
        ("birth_date", "typo"),
        ("sex", "null"),
    ]
    assert score.contributions[2].weight == 0.0
    assert model.weight_of_vector(model.vector(a, b)) == pytest.approx(expected)
    json.dumps(score.to_dict())  # the explanation is JSON-ready


def test_score_explains_with_the_current_parameters() -> None:
    """Contributions are made once per parameter set: new estimates must reach the explanation."""
    m = [[0.8, 0.05, 0.05, 0.05, 0.05], [0.9, 0.07, 0.03], [0.98, 0.02]]
    u = [[0.001, 0.004, 0.005, 0.01, 0.98], [0.0001, 0.001, 0.9989], [0.5, 0.5]]
    model = FellegiSunterModel(_small_settings(), m, u, lambda_=0.01)
    a = {"name": "SITI AMINAH", "birth_date": date(1990, 3, 7), "sex": "P"}
    before = model.score(a, dict(a))
    model.set_parameters([[0.6, 0.1, 0.1, 0.1, 0.1], m[1], [0.9, 0.1]], u, 0.01)
    after = model.score(a, dict(a))
    assert [c.m for c in before.contributions] == [0.8, 0.9, 0.98]
    assert [c.m for c in after.contributions] == [0.6, 0.9, 0.9]
    assert after.contributions[0].weight == pytest.approx(math.log2(0.6 / 0.001))
    assert after.weight == pytest.approx(math.log2(0.01 / 0.99) + sum(c.weight for c in after.contributions))


def test_three_outcomes_at_thresholds() -> None:
    model = FellegiSunterModel(_small_settings(thresholds={"link": 0.99, "review": 0.8}))
    assert model.outcome(0.99) is Outcome.LINK
    assert model.outcome(0.9899) is Outcome.REVIEW
    assert model.outcome(0.8) is Outcome.REVIEW
    assert model.outcome(0.7999) is Outcome.NEW
    m = [[0.8, 0.05, 0.05, 0.05, 0.05], [0.9, 0.07, 0.03], [0.98, 0.02]]
    u = [[0.001, 0.004, 0.005, 0.01, 0.98], [0.0001, 0.001, 0.9989], [0.5, 0.5]]
    model.set_parameters(m, u, 0.001)
    a = {"name": "SITI AMINAH", "birth_date": date(1990, 3, 7), "sex": "P"}
    assert model.score(a, dict(a)).outcome is Outcome.LINK
    assert model.score(a, dict(a, birth_date=date(1990, 7, 3), sex=None)).outcome is Outcome.REVIEW
    assert model.score(a, dict(a, name="BUDI", birth_date=date(1971, 1, 1))).outcome is Outcome.NEW


def test_tf_adjustment_rare_name_weighs_more() -> None:
    settings = MatchSettings(
        fields=["name", "name_tokens"],
        comparisons=[{"type": "NameComparison", "field": "name"}],
        blocking_rules=[{"name": "name", "keys": ["name"]}],
    )
    model = FellegiSunterModel(settings, [[0.8, 0.05, 0.05, 0.05, 0.05]], [[0.001, 0.004, 0.005, 0.01, 0.98]], 0.01)
    population = [{"name": "SITI"}] * 500 + [{"name": f"RARE{i}"} for i in range(500)] + [{"name": "WIRANATAKUSUMA"}]
    model.build_term_frequencies(population)
    common = model.score({"name": "SITI"}, {"name": "SITI"})
    rare = model.score({"name": "WIRANATAKUSUMA"}, {"name": "WIRANATAKUSUMA"})
    assert common.contributions[0].label == rare.contributions[0].label == "exact"
    assert rare.weight > common.weight + 5
    assert common.contributions[0].tf_adjustment < 0 < rare.contributions[0].tf_adjustment
    # u for "SITI" is its frequency (500 of 1001 records), so the adjustment is exactly log2(u_exact / that).
    assert common.contributions[0].tf_adjustment == pytest.approx(math.log2(0.001 / (500 / 1001)))


def test_term_frequencies_floor_and_round_trip() -> None:
    table = TermFrequencies({"SITI": 50}, total=100)
    assert table.u_value(["SITI"], 0.0) == pytest.approx(0.5)
    assert table.u_value(["NEVERSEEN", "ALSONEVER"], 1e-3) == 1e-3
    assert TermFrequencies.from_dict(json.loads(json.dumps(table.to_dict()))).counts == table.counts


# --- EM -------------------------------------------------------------------------------------------

TRUE_M = [[0.85, 0.1, 0.05], [0.7, 0.2, 0.06, 0.04], [0.95, 0.05], [0.6, 0.3, 0.1]]
TRUE_U = [[0.001, 0.004, 0.995], [0.002, 0.01, 0.05, 0.938], [0.5, 0.5], [0.05, 0.15, 0.8]]
NULL_RATE = [0.1, 0.02, 0.0, 0.3]


def _draw(
    rng: random.Random, probs: list[list[float]], n: int, null_rate: list[float] = NULL_RATE
) -> list[tuple[int, ...]]:
    out = []
    for _ in range(n):
        vec = []
        for j, row in enumerate(probs):
            if rng.random() < null_rate[j]:
                vec.append(NULL_LEVEL)
            else:
                vec.append(rng.choices(range(1, len(row) + 1), weights=row)[0])
        out.append(tuple(vec))
    return out


def test_em_recovers_known_parameters() -> None:
    rng = random.Random(11)
    true_lambda = 0.2
    n = 60_000
    n_match = int(n * true_lambda)
    blocked = _draw(rng, TRUE_M, n_match) + _draw(rng, TRUE_U, n - n_match)
    u = estimate_u(_draw(rng, TRUE_U, 100_000), [len(r) for r in TRUE_U])
    start_m = [[0.5] + [0.5 / (len(r) - 1)] * (len(r) - 1) for r in TRUE_M]
    result = expectation_maximisation(blocked, start_m, u, 0.5, tolerance=1e-6, max_iterations=500)
    print("\nEM on synthetic vectors:", result.iterations, "iterations, lambda", round(result.lambda_, 4))
    for est, true in zip(result.m, TRUE_M):
        print("  m", [round(x, 3) for x in est], "true", true)
    assert result.converged
    assert result.lambda_ == pytest.approx(true_lambda, abs=0.01)
    for est, true in zip(result.m, TRUE_M):
        assert est == pytest.approx(true, abs=0.02)
    for est, true in zip(u, TRUE_U):
        assert est == pytest.approx(true, abs=0.01)
    lls = [h.log_likelihood for h in result.history]
    assert all(b >= a - 1e-6 for a, b in zip(lls, lls[1:]))  # EM never decreases the likelihood


def test_em_fast_on_200k_pairs_with_8_comparisons() -> None:
    rng = random.Random(3)
    m8 = TRUE_M * 2
    u8 = TRUE_U * 2
    vectors = _draw(rng, m8, 40_000, NULL_RATE * 2) + _draw(rng, u8, 160_000, NULL_RATE * 2)
    start = time.perf_counter()
    result = expectation_maximisation(vectors, [[1 / len(r)] * len(r) for r in m8], u8, 0.5, fix_u=False)
    elapsed = time.perf_counter() - start
    print(f"\nEM 200k pairs x 8 comparisons: {elapsed:.2f} s, {result.n_distinct_vectors} distinct vectors")
    assert result.n_pairs == 200_000
    assert elapsed < 5.0


def test_em_on_synthetic_records(records: list[dict[str, Any]]) -> None:
    model = FellegiSunterModel(default_settings())
    blocked = candidate_pairs(records, model.blocking_rules, model.settings.max_block_size)
    pairs = sorted(blocked.pairs)
    result = train(model, records, pairs)
    truth = true_pairs(records)

    # The m a labelled sample would give: level shares among the true pairs found by blocking.
    vectors = comparison_vectors(model.comparisons, records, pairs)
    labelled = [v for v, p in zip(vectors, pairs) if p in truth]
    print(f"\nEM on {len(records)} synthetic records: {len(pairs)} candidate pairs, {len(labelled)} true;")
    print(f"  {result.iterations} iterations, converged={result.converged}, lambda={result.lambda_:.4f}"
          f" (true {len(labelled) / len(pairs):.4f})")
    for j, c in enumerate(model.comparisons):
        counts = [0] * (len(c.levels) - 1)
        for v in labelled:
            if v[j] != NULL_LEVEL:
                counts[v[j] - 1] += 1
        true_m = [x / max(sum(counts), 1) for x in counts]
        print(f"  {c.name:10s} labels {c.labels[1:]}")
        print(f"  {'':10s} m est  {[round(x, 3) for x in result.m[j]]}")
        print(f"  {'':10s} m true {[round(x, 3) for x in true_m]}")
        print(f"  {'':10s} u      {[round(x, 4) for x in result.u[j]]}")
        assert result.m[j] == pytest.approx(true_m, abs=0.02)
    assert result.converged
    assert result.lambda_ == pytest.approx(len(labelled) / len(pairs), abs=0.02)

    outcomes = [(model.score(records[i], records[j]).outcome, (i, j) in truth) for i, j in pairs]
    linked = [t for o, t in outcomes if o is Outcome.LINK]
    precision = sum(linked) / len(linked)
    recall = sum(linked) / len(truth)
    review = sum(o is Outcome.REVIEW for o, _ in outcomes)
    print(f"  link precision {precision:.4f}, link recall {recall:.4f}, review {review} pairs")
    assert precision >= 0.99 and recall >= 0.95
    assert min(min(row) for row in result.m) >= 1e-4 * 0.99  # no level becomes an infinite penalty


# --- blocking -------------------------------------------------------------------------------------


def test_blocking_finds_true_pairs(records: list[dict[str, Any]]) -> None:
    rules = default_settings().build_blocking_rules()
    result = candidate_pairs(records, rules)
    truth = true_pairs(records)
    recall = len(truth & result.pairs) / len(truth)
    print(f"\nblocking: {len(result.pairs)} candidate pairs for {len(records)} records, "
          f"{len(truth)} true pairs, recall {recall:.4f}, per rule {result.pairs_per_rule}")
    assert recall >= 0.99
    assert all(i < j for i, j in result.pairs)


def test_blocking_is_near_linear() -> None:
    rules = default_settings().build_blocking_rules()
    sizes = (2000, 8000)
    counts = []
    for n in sizes:
        recs = synthetic_records(n, seed=n)
        start = time.perf_counter()
        counts.append(len(candidate_pairs(recs, rules).pairs))
        print(f"\nblocking {n} records: {counts[-1]} pairs in {time.perf_counter() - start:.3f} s")
    # Four times the records, roughly four times the pairs (quadratic would be sixteen).
    assert counts[1] / counts[0] < 6


def test_blocking_skips_huge_blocks() -> None:
    recs = [{"nik": "0000000000000000", "phone": f"62812{i:08d}"} for i in range(50)]
    recs += [{"nik": "3673014501900001"}, {"nik": "3673014501900001"}]
    result = candidate_pairs(recs, [BlockingRule.of("nik", "nik")], max_block_size=10)
    assert result.pairs == {(50, 51)}
    assert [(b.rule, b.size) for b in result.skipped] == [("nik", 50)]
    assert result.skipped_records == 50


def test_block_key_transforms() -> None:
    rule = BlockingRule.of("r", "kelurahan", "birth_date|year", "name|prefix:1", "phone|last:8", "name|sorted")
    rec = {"kelurahan": "CIPARE", "birth_date": date(1990, 3, 7), "name": "SITI AMINAH", "phone": "+62 812-3456-7890"}
    assert rule.key(rec).split("\x1f") == ["CIPARE", "1990", "S", "34567890", "AMINAH SITI"]
    assert rule.key(dict(rec, phone=None)) is None
    assert BlockingRule.of("r", "name_tokens|sorted|prefix:3").key({"name_tokens": ("SITI", "AMINAH")}) == "AMI"
    for bad in ("name|soundex", "name|prefix", "name|prefix:x", "name|year:2"):
        with pytest.raises(ValueError):
            BlockingRule.of("bad", bad)


# --- settings -------------------------------------------------------------------------------------


def test_settings_round_trip_dict_json_yaml() -> None:
    settings = default_settings()
    assert MatchSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    assert MatchSettings.from_yaml(yaml.safe_dump(settings.to_dict())) == settings


def test_settings_reject_bad_configuration() -> None:
    base = default_settings().to_dict()
    with pytest.raises(ValueError):
        MatchSettings.from_dict({**base, "thresholds": {"link": 0.8, "review": 0.9}})
    with pytest.raises(ValueError):
        MatchSettings.from_dict({**base, "fields": ["nik"]})  # comparisons use unlisted fields
    with pytest.raises(ValueError):
        MatchSettings.from_dict({**base, "comparisons": [{"type": "Soundex", "field": "name"}]})


def test_model_round_trip_keeps_estimates(records: list[dict[str, Any]]) -> None:
    model = FellegiSunterModel(default_settings())
    model.build_term_frequencies(records)
    model.set_parameters([[x * 0.9 for x in row] for row in model.m], model.u, 0.123)
    again = FellegiSunterModel.from_json(model.to_json())
    assert again.to_dict() == model.to_dict()
    a, b = records[0], records[1]
    assert again.score(a, b) == model.score(a, b)
