"""LSTM Sentiment Lab's engine: data, models, training worker, run store. No streamlit here."""

import os

# Quiet TensorFlow's C++ start-up chatter in workers and the CLI (set before it is imported).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.2.0"
