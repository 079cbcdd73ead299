"""JavaScript the dashboard runs in the page (passed to `Blocks.launch(js=...)`).

`gr.Plot` has no click event, so plotly's own `plotly_click` is forwarded: every plotly graph on the page gets
one listener (re-attached whenever Gradio re-renders a plot), which writes the clicked point's label (its
`customdata`, set by `ui.figures`) into the hidden `#plot-click` textbox and fires that box's input event; the
Sweep tab's handler then adds the variant to the chat exactly as a table-row click does.
"""

PLOT_CLICK_BOX = "plot-click"

PAGE_JS = """
() => {
  const BOX = '#__BOX__';
  const onClick = (ev) => {
    const point = ev && ev.points && ev.points[0];
    let label = point && point.customdata;
    if (Array.isArray(label)) label = label[0];
    if (!label) return;
    const box = document.querySelector(BOX + ' textarea, ' + BOX + ' input');
    if (!box) return;
    // A nonce makes a second click on the same point a new value too.
    box.value = JSON.stringify({label: String(label), nonce: Date.now() + Math.random()});
    box.dispatchEvent(new Event('input', {bubbles: true}));
  };
  const bind = (el) => {
    if (!el.on || !el._ev) return;
    if (el._ev.listeners('plotly_click').includes(onClick)) return;
    el.on('plotly_click', onClick);
    el.dataset.msClick = '1';
  };
  const scan = () => document.querySelectorAll('.js-plotly-plot').forEach(bind);
  new MutationObserver(scan).observe(document.body, {childList: true, subtree: true});
  scan();
}
""".replace("__BOX__", PLOT_CLICK_BOX)
