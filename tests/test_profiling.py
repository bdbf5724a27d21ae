"""Segment profiles and their plain-language descriptions, on small customer tables built here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custseg.exceptions import DataError
from custseg.profiling import (MIN_EFFECT, cohens_d, cramers_v, describe_segments, humanize, profile_heatmap_data,
                               profile_segments, segments_markdown)


@pytest.fixture
def customers() -> tuple[pd.DataFrame, np.ndarray]:
    """60 customers in three segments.

    Segment 0: 20 married customers aged 60-79, half of them artists.
    Segment 1: 20 customers aged 20-39, a quarter married, no artists.
    Segment 2: 20 customers aged 30-49, half married, no artists; 4 without a known age.
    """
    labels = np.repeat([0, 1, 2], 20)
    age = np.concatenate([np.arange(60, 80), np.arange(20, 40), np.arange(30, 50)]).astype(float)
    age[[40, 41, 42, 43]] = np.nan
    married = ["Yes"] * 20 + (["Yes"] * 5 + ["No"] * 15) + ["Yes", "No"] * 10
    profession = (["Artist", "Doctor"] * 10) + (["Doctor", "Engineer"] * 10) + (["Engineer", "Doctor"] * 10)
    table = pd.DataFrame({
        "Age": age,
        "Ever_Married": pd.Series(married, dtype=object),
        "Profession": pd.Series(profession, dtype=object),
    })
    table.loc[59, "Ever_Married"] = np.nan
    return table, labels


@pytest.fixture
def profile(customers):
    table, labels = customers
    return profile_segments(table, labels, known_segments=np.repeat(["A", "B", "C"], 20))


def _cat(profile, segment, feature, value):
    rows = profile.categorical
    return rows[(rows.segment == segment) & (rows.feature == feature) & (rows.value == value)].iloc[0]


def _num(profile, segment, feature):
    rows = profile.numeric
    return rows[(rows.segment == segment) & (rows.feature == feature)].iloc[0]


def test_sizes_and_shares(profile):
    assert profile.sizes.to_dict("list") == {"segment": [0, 1, 2], "size": [20, 20, 20], "share": [1 / 3] * 3}
    assert profile.n_customers == 60


def test_columns_are_inferred_from_dtypes(profile):
    assert profile.numeric_features == ["Age"]
    assert profile.categorical_features == ["Ever_Married", "Profession"]


def test_all_married_segment_has_lift_one_over_overall_share(profile):
    # 20 + 5 + 10 married of 59 known (one missing in segment 2)
    overall = 35 / 59
    row = _cat(profile, 0, "Ever_Married", "Yes")
    assert row.share == 1.0
    assert row.share_overall == pytest.approx(overall)
    assert row.lift == pytest.approx(1 / overall)


def test_missing_values_are_left_out_and_counted(profile):
    # segment 2 has 19 known marital statuses, 10 of them married
    assert _cat(profile, 2, "Ever_Married", "Yes").share == pytest.approx(10 / 19)
    features = profile.features.set_index(["segment", "feature"])
    assert features.loc[(2, "Ever_Married"), "n_missing"] == 1
    assert features.loc[(1, "Age"), "n_missing"] == 0
    assert features.loc[(2, "Age"), "n_missing"] == 4
    assert profile.overall_numeric.set_index("feature").loc["Age", "n_missing"] == 4
    # segment 2's ages without the 4 missing ones: 34..49
    assert _num(profile, 2, "Age")["mean"] == pytest.approx(np.mean(np.arange(34, 50)))


def test_numeric_statistics_and_cohens_d(profile, customers):
    table, labels = customers
    old = _num(profile, 0, "Age")
    ages = np.arange(60, 80)
    assert (old["mean"], old["median"]) == (ages.mean(), np.median(ages))
    assert (old.q1, old.q3) == tuple(np.percentile(ages, [25, 75]))
    rest = table["Age"][labels != 0].dropna().to_numpy()
    pooled = np.sqrt(((19 * ages.var(ddof=1)) + (len(rest) - 1) * rest.var(ddof=1)) / (20 + len(rest) - 2))
    assert old.cohens_d == pytest.approx((ages.mean() - rest.mean()) / pooled)
    assert old.cohens_d > 2
    assert _num(profile, 1, "Age").cohens_d < 0


def test_cohens_d_and_cramers_v_edge_cases():
    assert cohens_d(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.0
    assert cohens_d(np.array([2.0, 2.0]), np.array([1.0, 1.0])) == np.inf
    assert np.isnan(cohens_d(np.array([]), np.array([1.0, 2.0])))
    assert cramers_v(np.array([[5, 5], [5, 5]])) == 0.0
    assert cramers_v(np.array([[5, 0], [0, 5]])) == pytest.approx(1.0)
    assert cramers_v(np.array([[5], [5]])) == 0.0


def test_effects_of_numeric_and_yes_no_features_are_on_one_scale():
    """For a yes/no feature, Cramér's V equals the point-biserial |r| its 0/1 coding would get as a number."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    married = np.where(rng.random(400) < np.where(labels == 1, 0.8, 0.3), "Yes", "No")
    table = pd.DataFrame({"Ever_Married": married.astype(object), "married_as_number": (married == "Yes").astype(float)})
    profile = profile_segments(table, labels, numeric=["married_as_number"], categorical=["Ever_Married"])
    effects = profile.features[profile.features.segment == 1].set_index("feature")["effect"]
    assert effects["Ever_Married"] == pytest.approx(effects["married_as_number"])
    assert effects["Ever_Married"] == pytest.approx(abs(np.corrcoef(labels == 1, married == "Yes")[0, 1]))


def test_features_are_ranked_by_effect(profile):
    ranked = profile.features[profile.features.segment == 0]
    assert ranked["rank"].tolist() == [1, 2, 3]
    assert ranked["effect"].is_monotonic_decreasing
    assert ranked["feature"].iloc[0] == "Age"  # ages 60-79 against 20-49: nothing separates more


def test_composition_by_known_segment(customers):
    table, labels = customers
    known = np.array(["A"] * 15 + ["B"] * 5 + ["B"] * 20 + ["C"] * 20, dtype=object)
    profile = profile_segments(table, labels, known_segments=known)
    comp = profile.composition.set_index(["segment", "known_segment"])["share"]
    assert comp[(0, "A")] == 0.75 and comp[(0, "B")] == 0.25
    assert comp[(1, "B")] == 1.0 and comp[(1, "A")] == 0.0


def test_to_frame_is_tidy(profile):
    frame = profile.to_frame()
    assert list(frame.columns) == ["segment", "feature", "value", "statistic", "number"]
    size = frame[(frame.statistic == "size")]
    assert size["number"].tolist() == [20, 20, 20] and (size["feature"] == "").all()
    age = frame[(frame.segment == 0) & (frame.feature == "Age")]
    assert set(age.statistic) == {"mean", "median", "q1", "q3", "cohens_d", "effect", "rank", "n_missing"}
    assert (age["value"] == "").all()
    lift = frame[(frame.segment == 0) & (frame.feature == "Ever_Married") & (frame.statistic == "lift")]
    assert lift.set_index("value")["number"].to_dict() == pytest.approx({"No": 0.0, "Yes": 59 / 35})
    overall = frame[(frame.segment == "all") & (frame.feature == "Profession") & (frame.statistic == "share")]
    assert overall["number"].sum() == pytest.approx(1.0)
    known = frame[(frame.feature == "known_segment") & (frame.statistic == "share") & (frame.segment == 2)]
    assert known.set_index("value")["number"].to_dict() == {"A": 0.0, "B": 0.0, "C": 1.0}


def test_bad_input_is_refused_with_the_reason(customers):
    table, labels = customers
    with pytest.raises(DataError, match=r"labels must have one value per row of the table \(60\); got shape \(59,\)"):
        profile_segments(table, labels[:-1])
    with pytest.raises(DataError, match=r"columns are missing from the table: 'Income'"):
        profile_segments(table, labels, numeric=["Income"])
    with pytest.raises(DataError, match=r"known_segments must have one value per row of the table \(60\); got 3"):
        profile_segments(table, labels, known_segments=["A", "B", "C"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["Low", "Average", "High", None])), min_size=2, max_size=60))
def test_segment_shares_add_up_to_the_overall_share(rows):
    labels = np.array([r[0] for r in rows])
    table = pd.DataFrame({"Spending_Score": pd.Series([r[1] for r in rows], dtype=object)})
    profile = profile_segments(table, labels, categorical=["Spending_Score"])
    cat = profile.categorical
    known = table["Spending_Score"].notna()
    for segment in np.unique(labels):
        shares = cat[cat.segment == segment]["share"]
        if known[labels == segment].any():
            assert shares.sum() == pytest.approx(1.0)
    # the overall share is the average of the segment shares weighted by known values per segment
    weights = pd.Series(known.to_numpy()).groupby(labels).sum()
    for value, group in cat.groupby("value"):
        group = group[group.segment.map(weights) > 0]
        weighted = (group["share"] * group.segment.map(weights)).sum() / weights.sum()
        assert weighted == pytest.approx(group["share_overall"].iloc[0])
    assert profile.features["effect"].between(0, 1 + 1e-12).all()


# --------------------------------------------------------------------------- descriptions


def test_description_names_the_right_traits(profile):
    old, young, middle = describe_segments(profile)
    assert old.text.startswith("Segment 0 (20 customers, 33%): ")
    # quartiles 64.75 and 74.25 of a whole-number feature, widened to whole numbers
    assert old.traits[0] == "aged 64-75 (overall 33-66)"
    assert "mostly ever married (100% vs 59% overall)" in old.traits
    assert "profession Artist 3.0x as common as overall (50% vs 17%)" in old.traits
    assert old.text.endswith("Known segments: A 100%.")
    assert old.composition == {"A": 1.0}
    assert young.traits[0] == "aged 24-35 (overall 33-66)"
    assert "few ever married (25% vs 59% overall)" in young.traits


def test_direction_phrase_for_wide_numeric_features():
    labels = np.repeat([0, 1], 50)
    spend = np.concatenate([np.linspace(0, 1000, 50), np.linspace(0, 600, 50)])
    profile = profile_segments(pd.DataFrame({"Annual_Spend": spend}), labels)
    high, low = describe_segments(profile)
    assert high.traits == ["above-average annual spend (mean 500 vs 400)"]
    assert low.traits == ["below-average annual spend (mean 300 vs 400)"]
    assert (high.name, low.name) == ("High Annual Spend", "Low Annual Spend")


def test_rare_category_phrase_and_two_valued_label():
    labels = np.repeat([0, 1], 40)
    profession = ["Engineer", "Doctor", "Lawyer", "Artist"] * 10 + ["Healthcare"] * 30 + ["Doctor"] * 10
    gender = ["Male"] * 36 + ["Female"] * 4 + ["Female"] * 30 + ["Male"] * 10
    table = pd.DataFrame({"Profession": pd.Series(profession, dtype=object), "Gender": pd.Series(gender, dtype=object)})
    first, second = describe_segments(profile_segments(table, labels))
    assert "gender mostly Male (90% vs 57% overall)" in first.traits
    assert "profession never Healthcare (0% vs 38% overall)" in first.traits
    assert "profession mostly Healthcare (75% vs 38% overall)" in second.traits
    assert "Male" in first.name.split(", ") and "Non-Healthcare Profession" in first.name.split(", ")


def test_segment_like_everyone_else_says_so():
    table = pd.DataFrame({"Age": [30.0, 40.0] * 10, "Gender": pd.Series(["Male", "Female"] * 10, dtype=object)})
    description = describe_segments(profile_segments(table, np.repeat([0, 1], 10)))[0]
    assert description.traits == []
    assert "close to the overall population on every feature" in description.text
    assert all(e < MIN_EFFECT for e in profile_segments(table, np.repeat([0, 1], 10)).features["effect"])


def test_names_are_short_unique_and_deterministic(customers):
    table, labels = customers
    # segments 3 and 4 are copies of segment 1's customers: same profile, so the same generated name
    extra = table[labels == 1]
    table2 = pd.concat([table, extra, extra], ignore_index=True)
    labels2 = np.concatenate([labels, np.full(20, 3), np.full(20, 4)])
    names = [d.name for d in describe_segments(profile_segments(table2, labels2))]
    assert names == ["Aged 64-75, Artist Profession", "Aged 24-35, Never Married (1)", "Engineer Profession",
                     "Aged 24-35, Never Married (3)", "Aged 24-35, Never Married (4)"]
    # the same customers in another row order give the same words
    order = np.random.default_rng(0).permutation(len(table2))
    shuffled = describe_segments(profile_segments(table2.iloc[order].reset_index(drop=True), labels2[order]))
    assert [d.name for d in shuffled] == names
    assert [d.text for d in shuffled] == [d.text for d in describe_segments(profile_segments(table2, labels2))]


def test_given_names_are_used(profile):
    assert [d.name for d in describe_segments(profile, names={0: "Golden years"})] == [
        "Golden years", "Segment 1", "Segment 2"]
    assert [d.name for d in describe_segments(profile, names=["a", "b", "c"])] == ["a", "b", "c"]
    with pytest.raises(DataError, match="names must give one name per segment \\(3\\); got 2"):
        describe_segments(profile, names=["a", "b"])


@pytest.mark.parametrize("column, words", [
    ("Ever_Married", "ever married"), ("Spending_Score", "spending score"), ("familySize", "family size"),
    ("Work-Experience", "work experience"), ("AGE", "age"), ("Var_1", "var 1"),
])
def test_humanize(column, words):
    assert humanize(column) == words


def test_segments_markdown(profile):
    text = segments_markdown(describe_segments(profile), title="Our customers")
    lines = text.splitlines()
    assert lines[0] == "# Our customers"
    assert lines[4].startswith("| 0 | ") and lines[4].endswith("| 20 | 33% |")
    assert text.count("\n## Segment ") == 3
    for description in describe_segments(profile):
        assert f"## Segment {description.segment}: {description.name}\n\n{description.text}\n" in text


def test_segments_markdown_keeps_table_cells_whole(profile):
    descriptions = describe_segments(profile, names=["Big | small", "b", "c"])
    assert "| 0 | Big \\| small | 20 | 33% |" in segments_markdown(descriptions)


def test_heatmap_data(profile):
    data = profile_heatmap_data(profile)
    assert set(data.segment) == {0, 1, 2}
    age = data[data.column == "Age (mean)"].set_index("segment")
    assert age.loc[0, "cohens_d"] == pytest.approx(_num(profile, 0, "Age").cohens_d)
    assert age.loc[0, "text"] == "70"
    married = data[data.column == "Ever_Married = Yes"].set_index("segment")
    assert married.loc[0, "text"] == "100%"
    # one cell per segment and column
    assert len(data) == 3 * data.column.nunique()
