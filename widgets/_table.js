// The label table's front end: draws one page sent by the kernel and reports
// header clicks (sort) and row clicks (selection). All querying happens in the
// kernel; the page arrives in the format of _wire.py, decoded by _wire.js (which
// the kernel places before this file).
//
// Under the header, each numeric column has a histogram sent by the kernel (edges as
// decimal text, counts as int64). Dragging across bars brushes that range: the front
// end sends every brush as {column: [low, high]} in decimal text (integer bounds exact,
// high inclusive); a double-click clears the column's brush. The kernel answers with a
// new page and new histograms, each counted under every brush but its own.

const HISTOGRAM_WIDTH = 80;
const HISTOGRAM_HEIGHT = 28;
const SVG = "http://www.w3.org/2000/svg";

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "pocaduck-table";
  el.appendChild(root);
  let anchorRow = null;

  function draw() {
    const page = model.get("page");
    const numRows = page.num_rows || 0;
    const columns = (page.columns || []).map((c) => ({ name: c.name, type: c.type, values: decodeColumn(c, numRows) }));
    const labelColumn = columns.find((c) => c.name === model.get("label_column"));
    const selected = new Set(model.get("selected"));
    const orderBy = model.get("order_by");
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    for (const column of columns) {
      const cell = document.createElement("th");
      const arrow = column.name === orderBy ? (model.get("descending") ? " ▼" : " ▲") : "";
      cell.textContent = column.name + arrow;
      cell.title = `sort by ${column.name}`;
      cell.dataset.column = column.name;
      if (column === labelColumn) cell.classList.add("label");
      cell.addEventListener("click", () => sortBy(column.name));
      head.appendChild(cell);
    }
    drawHistograms(table.tHead, columns);
    const body = table.createTBody();
    for (let i = 0; i < numRows; i++) {
      const row = body.insertRow();
      const label = labelColumn ? labelColumn.values[i] : null;
      if (label !== null) row.dataset.label = label;
      if (selected.has(label)) row.classList.add("selected");
      for (const column of columns) {
        const cell = row.insertCell();
        const value = column.values[i];
        cell.textContent = value === null ? "∅" : value;
        if (column.type !== "string") cell.className = "number";
        if (column === labelColumn) cell.classList.add("label");
      }
      row.addEventListener("click", (event) => clickRow(event, i, labelColumn));
    }
    root.replaceChildren(table);
  }

  function drawHistograms(head, columns) {
    const histograms = new Map(((model.get("histograms") || {}).columns || []).map((h) => [h.name, h]));
    if (histograms.size === 0) return;
    const row = head.insertRow();
    row.className = "pocaduck-histograms";
    for (const column of columns) {
      const cell = row.insertCell();
      if (column.name === model.get("label_column")) cell.classList.add("label");
      const histogram = histograms.get(column.name);
      if (histogram) cell.appendChild(histogramView(decodeHistogram(histogram)));
    }
  }

  function decodeHistogram(h) {
    const edges = decodeColumn(h.edges, h.bins + 1);
    const counts = decodeColumn(h.counts, h.bins).map(Number);
    return { name: h.name, integer: h.integer, scale: h.scale, edges, counts };
  }

  function histogramView(h) {
    const n = h.counts.length;
    const step = HISTOGRAM_WIDTH / n;
    const highest = Math.max(1, ...h.counts);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("width", HISTOGRAM_WIDTH);
    svg.setAttribute("height", HISTOGRAM_HEIGHT);
    svg.classList.add("pocaduck-histogram");
    svg.dataset.histogram = h.name;
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${h.name} (${h.scale} bins): drag to keep a range, double-click to clear`;
    svg.appendChild(title);
    const brush = (model.get("brushes") || {})[h.name];
    const [low, high] = brush ? brushBins(h, brush) : [-1, -1];
    for (let i = 0; i < n; i++) {
      const bar = document.createElementNS(SVG, "rect");
      const height = h.counts[i] ? Math.max(1, (h.counts[i] / highest) * (HISTOGRAM_HEIGHT - 2)) : 0;
      bar.setAttribute("x", i * step);
      bar.setAttribute("y", HISTOGRAM_HEIGHT - height);
      bar.setAttribute("width", Math.max(step - 1, 0.5));
      bar.setAttribute("height", height);
      bar.setAttribute("class", "bar" + (brush && (i < low || i > high) ? " outside" : ""));
      bar.dataset.count = h.counts[i];
      const tip = document.createElementNS(SVG, "title");
      tip.textContent = `${binText(h, i)}: ${h.counts[i].toLocaleString()} rows`;
      bar.appendChild(tip);
      svg.appendChild(bar);
    }
    const band = document.createElementNS(SVG, "rect");
    band.setAttribute("class", "band");
    band.setAttribute("y", 0);
    band.setAttribute("height", HISTOGRAM_HEIGHT);
    showBand(band, low * step, (high + 1) * step, Boolean(brush));
    if (brush) {
      svg.dataset.low = brush[0] === null ? "" : brush[0];
      svg.dataset.high = brush[1] === null ? "" : brush[1];
    }
    svg.appendChild(band);
    svg.addEventListener("mousedown", (event) => startDrag(event, svg, band, h));
    svg.addEventListener("dblclick", () => sendBrush(h.name, null));
    return svg;
  }

  function showBand(band, from, to, visible) {
    band.setAttribute("x", Math.min(from, to));
    band.setAttribute("width", Math.abs(to - from));
    band.style.display = visible ? "" : "none";
  }

  function binText(h, i) {
    const [from, to] = [h.edges[i], h.edges[i + 1]];
    if (!h.integer) return `${formatFloat(Number(from))} to ${formatFloat(Number(to))}`;
    const last = (BigInt(to) - 1n).toString();
    return from === last ? from : `${from}–${last}`;
  }

  // The bins a brush covers, from its bounds (text, null for an open side).
  function brushBins(h, [low, high]) {
    const n = h.counts.length;
    const edge = (i) => Number(h.edges[i]);
    let first = 0;
    let last = n - 1;
    if (low !== null) while (first < n - 1 && edge(first + 1) <= Number(low)) first++;
    if (high !== null) while (last > 0 && edge(last) > Number(high)) last--;
    return [first, Math.max(first, last)];
  }

  function startDrag(event, svg, band, h) {
    event.preventDefault();
    const n = h.counts.length;
    const step = HISTOGRAM_WIDTH / n;
    const left = svg.getBoundingClientRect().left;
    const at = (e) => Math.min(Math.max(e.clientX - left, 0), HISTOGRAM_WIDTH);
    const start = at(event);
    const shown = ["x", "width"].map((name) => band.getAttribute(name)).concat(band.style.display);
    const move = (e) => showBand(band, start, at(e), true);
    const up = (e) => {
      window.removeEventListener("mousemove", move);
      window.removeEventListener("mouseup", up);
      const end = at(e);
      if (Math.abs(end - start) < 3) {
        // A click, not a drag: the band goes back as it was (no redraw, so a double-click lands on this svg).
        band.setAttribute("x", shown[0]);
        band.setAttribute("width", shown[1]);
        band.style.display = shown[2];
        return;
      }
      const first = Math.min(Math.floor(Math.min(start, end) / step), n - 1);
      const last = Math.max(first, Math.min(Math.ceil(Math.max(start, end) / step) - 1, n - 1));
      const high = h.integer ? (BigInt(h.edges[last + 1]) - 1n).toString() : h.edges[last + 1];
      sendBrush(h.name, [h.edges[first], high]);
    };
    window.addEventListener("mousemove", move);
    window.addEventListener("mouseup", up);
  }

  function sendBrush(name, bounds) {
    const brushes = { ...(model.get("brushes") || {}) };
    if (bounds === null) {
      if (!(name in brushes)) return;
      delete brushes[name];
    } else brushes[name] = bounds;
    model.set("brushes", brushes);
    model.save_changes();
  }

  function sortBy(name) {
    if (model.get("order_by") === name) model.set("descending", !model.get("descending"));
    else {
      model.set("order_by", name);
      model.set("descending", name !== model.get("label_column"));
    }
    model.save_changes();
  }

  function clickRow(event, rowIndex, labelColumn) {
    if (!labelColumn) return;
    const label = labelColumn.values[rowIndex];
    if (label === null) return;
    let selected = model.get("selected").slice();
    if (event.shiftKey && anchorRow !== null) {
      const [first, last] = [Math.min(anchorRow, rowIndex), Math.max(anchorRow, rowIndex)];
      const range = labelColumn.values.slice(first, last + 1).filter((v) => v !== null);
      selected = event.ctrlKey || event.metaKey ? [...new Set([...selected, ...range])] : range;
    } else if (event.ctrlKey || event.metaKey) {
      selected = selected.includes(label) ? selected.filter((v) => v !== label) : [...selected, label];
      anchorRow = rowIndex;
    } else {
      selected = [label];
      anchorRow = rowIndex;
    }
    model.set("selected", selected);
    model.save_changes();
  }

  model.on("change:page", () => {
    anchorRow = null;
    draw();
  });
  model.on("change:selected", draw);
  model.on("change:histograms", draw);
  model.on("change:brushes", draw);
  model.on("change:order_by", draw);
  model.on("change:descending", draw);
  draw();
}

export default { render };
