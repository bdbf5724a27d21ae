"""custseg on customer tables that are not the shipped one, as a new user would meet them.

Each table is built here to look like a well-known public customer dataset (nothing
is downloaded): its delimiter, column names, missing-value tokens, ID formats, dates
and numbers stored as text. Each must train through the command line with flags
only (the settings file used here holds nothing but small network and k-means
settings for speed: no column roles), and the inferred roles must be the ones a
person would choose.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from custseg.cli import main

from conftest import tiny_toml

SPEED_ONLY_TOML = tiny_toml(n_clusters=4, k_max=5)

N = 300


def bank_marketing(path: Path, rng: np.random.Generator) -> None:
    """UCI bank marketing (bank-additional-full.csv): ';'-separated, quoted text, 'unknown' tokens, target 'y'."""
    job = rng.choice(["admin.", "blue-collar", "technician", "services", "management", "retired", "unknown"], N)
    education = rng.choice(["basic.4y", "high.school", "university.degree", "professional.course", "unknown"], N)
    frame = pd.DataFrame({
        "age": rng.integers(18, 90, N),
        "job": job,
        "marital": rng.choice(["married", "single", "divorced", "unknown"], N, p=[0.6, 0.28, 0.1, 0.02]),
        "education": education,
        "default": rng.choice(["no", "unknown", "yes"], N, p=[0.79, 0.2, 0.01]),
        "housing": rng.choice(["no", "yes", "unknown"], N),
        "loan": rng.choice(["no", "yes", "unknown"], N),
        "contact": rng.choice(["cellular", "telephone"], N),
        "month": rng.choice(["may", "jun", "jul", "aug", "nov"], N),
        "day_of_week": rng.choice(["mon", "tue", "wed", "thu", "fri"], N),
        "duration": rng.integers(0, 2000, N),
        "campaign": rng.integers(1, 30, N),
        "pdays": np.where(rng.random(N) < 0.9, 999, rng.integers(0, 27, N)),
        "previous": rng.integers(0, 8, N),
        "poutcome": rng.choice(["nonexistent", "failure", "success"], N),
        "emp.var.rate": rng.choice([1.1, 1.4, -0.1, -0.2, -1.8, -2.9, -3.4], N),
        "cons.price.idx": rng.choice([93.994, 94.465, 93.918, 93.444, 92.893], N),
        "cons.conf.idx": rng.choice([-36.4, -41.8, -42.7, -36.1, -46.2], N),
        "euribor3m": rng.uniform(0.6, 5.0, N).round(3),
        "nr.employed": rng.choice([5191.0, 5228.1, 5195.8, 5099.1], N),
        "y": rng.choice(["no", "yes"], N, p=[0.88, 0.12]),
    })
    frame.to_csv(path, sep=";", index=False, quoting=2)  # csv.QUOTE_NONNUMERIC, as the UCI file


def marketing_campaign(path: Path, rng: np.random.Generator) -> None:
    """Kaggle customer personality analysis: tab-separated, ID, Income with blanks, Dt_Customer dates, constant columns."""
    start = pd.Timestamp("2012-07-30")
    frame = pd.DataFrame({
        "ID": rng.permutation(np.arange(1, 11000))[:N],
        "Year_Birth": rng.integers(1940, 2000, N),
        "Education": rng.choice(["Graduation", "PhD", "Master", "Basic", "2n Cycle"], N),
        "Marital_Status": rng.choice(["Married", "Together", "Single", "Divorced", "Widow", "YOLO"], N),
        "Income": rng.normal(52000, 20000, N).round().astype(object),
        "Kidhome": rng.integers(0, 3, N),
        "Teenhome": rng.integers(0, 3, N),
        "Dt_Customer": [(start + pd.Timedelta(days=int(d))).strftime("%d-%m-%Y") for d in rng.integers(0, 700, N)],
        "Recency": rng.integers(0, 100, N),
        "MntWines": rng.integers(0, 1500, N),
        "MntMeatProducts": rng.integers(0, 1700, N),
        "NumWebPurchases": rng.integers(0, 27, N),
        "AcceptedCmp1": rng.integers(0, 2, N),
        "Complain": rng.choice([0, 1], N, p=[0.99, 0.01]),
        "Z_CostContact": 3,
        "Z_Revenue": 11,
        "Response": rng.integers(0, 2, N),
    })
    frame.loc[rng.choice(N, 8, replace=False), "Income"] = ""
    frame.to_csv(path, sep="\t", index=False)


def telco_churn(path: Path, rng: np.random.Generator) -> None:
    """IBM telco churn: customerID like '7590-VHVEG', SeniorCitizen 0/1, TotalCharges as text with ' ' blanks."""
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    tenure = rng.integers(0, 73, N)
    tenure[:5] = 0
    monthly = rng.uniform(18, 119, N).round(2)
    frame = pd.DataFrame({
        "customerID": [f"{rng.integers(1000, 9999)}-{''.join(rng.choice(letters, 5))}" for _ in range(N)],
        "gender": rng.choice(["Female", "Male"], N),
        "SeniorCitizen": rng.choice([0, 1], N, p=[0.84, 0.16]),
        "Partner": rng.choice(["Yes", "No"], N),
        "Dependents": rng.choice(["Yes", "No"], N),
        "tenure": tenure,
        "PhoneService": rng.choice(["Yes", "No"], N),
        "MultipleLines": rng.choice(["No phone service", "No", "Yes"], N),
        "InternetService": rng.choice(["DSL", "Fiber optic", "No"], N),
        "Contract": rng.choice(["Month-to-month", "One year", "Two year"], N),
        "PaperlessBilling": rng.choice(["Yes", "No"], N),
        "PaymentMethod": rng.choice(["Electronic check", "Mailed check", "Bank transfer (automatic)",
                                     "Credit card (automatic)"], N),
        "MonthlyCharges": monthly,
        "TotalCharges": [" " if t == 0 else f"{t * m:.2f}" for t, m in zip(tenure, monthly)],
        "Churn": rng.choice(["No", "Yes"], N, p=[0.73, 0.27]),
    })
    frame = frame.drop_duplicates("customerID")
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)  # TotalCharges stays a string column
    else:
        frame.to_csv(path, index=False)


def mall_customers(path: Path, rng: np.random.Generator) -> None:
    """Mall customers: CustomerID 1..200, 'Genre', and column names with spaces and brackets."""
    n = 200
    frame = pd.DataFrame({
        "CustomerID": np.arange(1, n + 1),
        "Genre": rng.choice(["Male", "Female"], n),
        "Age": rng.integers(18, 71, n),
        "Annual Income (k$)": rng.integers(15, 138, n),
        "Spending Score (1-100)": rng.integers(1, 100, n),
    })
    frame.to_csv(path, index=False)


def credit_card(path: Path, rng: np.random.Generator) -> None:
    """Credit card customers (CC GENERAL): CUST_ID 'C10001', '|'-separated here, MINIMUM_PAYMENTS with blanks."""
    frame = pd.DataFrame({
        "CUST_ID": [f"C{10001 + i}" for i in range(N)],
        "BALANCE": rng.gamma(1.5, 1000, N).round(6),
        "BALANCE_FREQUENCY": rng.uniform(0, 1, N).round(6),
        "PURCHASES": rng.gamma(1.0, 800, N).round(2),
        "CREDIT_LIMIT": rng.choice([1000.0, 1500.0, 2500.0, 7000.0, 12000.0, 4500.0, 3000.0], N).astype(object),
        "MINIMUM_PAYMENTS": rng.gamma(1.2, 700, N).round(6).astype(object),
        "PRC_FULL_PAYMENT": rng.uniform(0, 1, N).round(6),
        "TENURE": rng.choice([6, 7, 8, 9, 10, 11, 12], N, p=[0.02, 0.02, 0.03, 0.03, 0.05, 0.05, 0.8]),
    })
    frame.loc[rng.choice(N, 10, replace=False), "MINIMUM_PAYMENTS"] = ""
    frame.loc[3, "CREDIT_LIMIT"] = ""
    frame.to_csv(path, sep="|", index=False)


TABLES = {
    # name: (file name, builder, flags, expected roles (others: anything but excluded/id/label),
    #        delimiter, numeric-from-text notes expected)
    "bank marketing": ("bank-additional-full.csv", bank_marketing, ["--na-values", "unknown"],
                       {"y": "label", "age": "numeric", "duration": "numeric", "pdays": "numeric",
                        "emp.var.rate": "numeric", "nr.employed": "numeric", "job": "categorical",
                        "default": "categorical", "month": "categorical"}, ";", {}),
    "marketing campaign": ("marketing_campaign.csv", marketing_campaign, [],
                           {"ID": "id", "Dt_Customer": "excluded", "Z_CostContact": "excluded",
                            "Z_Revenue": "excluded", "Income": "numeric", "Year_Birth": "numeric",
                            "Kidhome": "categorical", "Marital_Status": "categorical", "Response": "categorical"},
                           "\t", {}),
    "telco churn": ("WA_Fn-UseC_-Telco-Customer-Churn.csv", telco_churn, [],
                    {"customerID": "id", "TotalCharges": "numeric", "MonthlyCharges": "numeric",
                     "tenure": "numeric", "SeniorCitizen": "categorical", "PaymentMethod": "categorical",
                     "Churn": "categorical"}, ",", {"TotalCharges": "stored as text; blank cells read as missing"}),
    "telco churn (parquet, --label-column)": (
        "telco.parquet", telco_churn, ["--label-column", "Churn"],
        {"customerID": "id", "TotalCharges": "numeric", "Churn": "label", "SeniorCitizen": "categorical"},
        None, {"TotalCharges": "stored as text in the file; blank cells read as missing"}),
    "mall customers": ("Mall_Customers.csv", mall_customers, [],
                       {"CustomerID": "id", "Genre": "categorical", "Age": "numeric",
                        "Annual Income (k$)": "numeric", "Spending Score (1-100)": "numeric"}, ",", {}),
    "credit card": ("CC GENERAL.csv", credit_card, [],
                    {"CUST_ID": "id", "MINIMUM_PAYMENTS": "numeric", "CREDIT_LIMIT": "numeric",
                     "BALANCE": "numeric", "TENURE": "numeric"}, "|", {}),
}


#: the tables whose figures are drawn too: column names with "$" and parentheses (matplotlib reads "$...$"
#: as mathematics), and the widest table (the profile heatmap's many columns); the others test roles only
DRAWN = {"mall customers", "marketing campaign", "credit card"}


@pytest.mark.parametrize("name", list(TABLES))
def test_other_customer_table_trains_with_sensible_roles(name, tmp_path, capsys):
    file_name, build, flags, expected, delimiter, notes = TABLES[name]
    flags = [*flags, *([] if name in DRAWN else ["--no-figures"])]
    path = tmp_path / file_name
    build(path, np.random.default_rng(7))
    config = tmp_path / "speed.toml"
    config.write_text(SPEED_ONLY_TOML, encoding="utf-8")
    models, results = tmp_path / "models", tmp_path / "results"

    code = main(["train", "--train", str(path), "--config", str(config), "--models-dir", str(models),
                 "--results-dir", str(results), *flags])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads((results / "run_summary.json").read_text())
    roles = {c["name"]: c["role"] for c in summary["schema"]["columns"]}
    for column, role in expected.items():
        assert roles[column] == role, (column, summary["schema"]["columns"])
    # every column not listed is a feature: nothing useful was thrown away
    for column, role in roles.items():
        if column not in expected:
            assert role in ("numeric", "categorical"), (column, role)
    assert summary["data"]["train"]["delimiter"] == delimiter
    assert summary["data"]["train"]["numeric_from_text"] == notes
    # the table of roles printed at the start says why, including numbers read from text
    # (compared without the table's borders and line breaks: rich wraps cells at 80 columns)
    printed = "".join(ch for ch in captured.err if ch not in "│ \n")
    for column, note in notes.items():
        assert note.replace(" ", "") in printed
    has_label = "label" in roles.values()
    columns = pd.read_csv(results / "training_results.csv").columns.tolist()
    assert ("Predicted_Segment" in columns) == has_label
    assert not (results / "submission.csv").exists()  # no test table was given


def test_unknown_tokens_become_missing_values_only_when_asked(tmp_path):
    from custseg.io.reading import read_table

    path = tmp_path / "bank.csv"
    bank_marketing(path, np.random.default_rng(1))
    plain = read_table(path).frame
    asked = read_table(path, na_values=["unknown"]).frame
    assert (plain["job"] == "unknown").any() and plain["job"].notna().all()
    assert asked["job"].isna().sum() == (plain["job"] == "unknown").sum()
    assert "unknown" not in set(asked["education"].dropna())


def test_predict_on_a_parquet_table_with_new_customers(tmp_path, capsys):
    """Train on the telco CSV, score a Parquet file of new customers with an extra column and unseen categories."""
    train_csv = tmp_path / "telco.csv"
    telco_churn(train_csv, np.random.default_rng(3))
    config = tmp_path / "speed.toml"
    config.write_text(SPEED_ONLY_TOML, encoding="utf-8")
    assert main(["train", "--train", str(train_csv), "--config", str(config), "--models-dir",
                 str(tmp_path / "models"), "--results-dir", str(tmp_path / "results"), "-q", "--no-figures"]) == 0
    new = pd.read_csv(train_csv, dtype={"TotalCharges": str}, keep_default_na=False).head(25)
    new["customerID"] = [f"NEW-{i}" for i in range(len(new))]
    new.loc[[0, 1], "Contract"] = "Three year"
    new["Region"] = "North"
    new.to_parquet(tmp_path / "new.parquet", index=False)
    capsys.readouterr()

    code = main(["predict", "--model", str(tmp_path / "models"), "--input", str(tmp_path / "new.parquet"),
                 "--output", str(tmp_path / "scored.csv")])

    out = " ".join(capsys.readouterr().out.split())
    assert code == 0
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert scored["customerID"].tolist() == new["customerID"].tolist()  # the table's own ID column name
    assert "Ignored columns not used by the model: Region" in out
    assert "Unseen categories in Contract (assigned the training mode): 'Three year' x2" in out
