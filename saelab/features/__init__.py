"""Feature pages: precomputed dashboards, labels, search and prompt analysis for SAE latents."""
