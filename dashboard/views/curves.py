"""Training curves: loss terms, validation accuracy and AUC, active filters, MACs reduction and τ, runs overlaid."""

from __future__ import annotations

import streamlit as st

st.title("Training curves")
