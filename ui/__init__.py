"""mergescope dashboard (Gradio): layout, events and figures only; it calls the engine's entry points."""
