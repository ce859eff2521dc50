"""The texts every classification and embeddings target is sent: varied in length and
intent, the same for every target and every run."""

from __future__ import annotations

TEXTS = [
    "please book a table for four people at eight",
    "what's my account balance",
    "I want to speak to a human agent right now, this is urgent",
    "how do I say thank you in japanese",
    "my card was declined at the store again and I am really annoyed about it",
    "set an alarm for 6 am tomorrow",
    "transfer 200 dollars from checking to savings",
    "what is the meaning of life",
    "can you tell me whether my flight to boston has been delayed",
    "cancel my subscription",
    "I've been waiting for a refund for three weeks and nobody answers my emails",
    "play some jazz",
]
