"""The usage ledger: what each subject used, per model, version and minute (ledger.py),
and the reports that read it back (report.py)."""
