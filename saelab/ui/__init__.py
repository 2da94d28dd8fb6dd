"""The thin Streamlit layer: cached resources and small widgets. The only saelab code importing streamlit."""
