// The worker grid's front end: one small cell per worker, painted as the kernel
// says (state, background, title: all computed kernel-side), and a line under the
// grid that repeats the counters of the cell under the pointer. The cells are
// kept and repainted in place, so a redraw does not lose the hovered cell.

function render({ model, el }) {
  const grid = document.createElement("div");
  grid.className = "pocaduck-grid";
  const detail = document.createElement("div");
  detail.className = "pocaduck-grid-detail";
  el.append(grid, detail);
  let hovered = null;

  function draw() {
    const page = model.get("cells");
    const numRows = page.num_rows || 0;
    const column = Object.fromEntries((page.columns || []).map((c) => [c.name, decodeColumn(c, numRows)]));
    while (grid.children.length < numRows) {
      const cell = document.createElement("div");
      cell.className = "pocaduck-cell";
      grid.appendChild(cell);
    }
    while (grid.children.length > numRows) grid.lastChild.remove();
    for (let i = 0; i < numRows; i++) {
      const cell = grid.children[i];
      cell.dataset.worker = column.worker[i];
      cell.dataset.state = column.state[i];
      if (cell.title !== column.title[i]) cell.title = column.title[i];
      // The browser rewrites a style it is given (rgb() for #hex): compare with what was given last time.
      if (cell.pocaduckBackground !== column.background[i]) {
        cell.style.background = column.background[i];
        cell.pocaduckBackground = column.background[i];
      }
    }
    showDetail();
  }

  function showDetail() {
    const cell = hovered && [...grid.children].find((c) => c.dataset.worker === hovered);
    detail.textContent = cell ? cell.title : "point at a cell for its worker's counters";
  }

  grid.addEventListener("mouseover", (event) => {
    if (event.target.dataset.worker === undefined) return;
    hovered = event.target.dataset.worker;
    showDetail();
  });
  grid.addEventListener("mouseleave", () => {
    hovered = null;
    showDetail();
  });
  model.on("change:cells", draw);
  draw();
}

export default { render };
