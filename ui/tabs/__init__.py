"""One module per dashboard tab. Each has `layout(ctx)` (called inside its `gr.Tab`, returns the tab's
components as a namespace) and `wire(ctx, ui)` (connects its events; `ui` holds every tab's namespace, for the
few events that reach across tabs, e.g. a sweep filling the chat picker)."""
