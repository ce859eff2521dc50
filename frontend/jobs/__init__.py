"""Batch jobs: files of text rows (JSONL or CSV) run through a model in the background.

sniff.py tells what an uploaded file holds, records.py reads its records at exact byte
offsets and rows.py makes them rows, plan.py cuts a file into chunks of rows; the storage
of the files is frontend/storage.
"""
