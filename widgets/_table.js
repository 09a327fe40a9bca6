// The label table's front end: draws one page sent by the kernel and reports
// header clicks (sort) and row clicks (selection). All querying happens in the
// kernel; this file only decodes the page format described in _wire.py.

function decodeColumn(column, numRows) {
  const data = column.data;
  const valid = new Uint8Array(column.valid.buffer, column.valid.byteOffset, numRows);
  const values = new Array(numRows);
  if (column.type === "string") {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const offsets = column.offsets;
    const decoder = new TextDecoder();
    for (let i = 0; i < numRows; i++) {
      const start = offsets.getInt32(i * 4, true);
      const end = offsets.getInt32((i + 1) * 4, true);
      values[i] = decoder.decode(bytes.subarray(start, end));
    }
  } else {
    for (let i = 0; i < numRows; i++) {
      if (column.type === "uint64") values[i] = data.getBigUint64(i * 8, true).toString();
      else if (column.type === "int64") values[i] = data.getBigInt64(i * 8, true).toString();
      else values[i] = formatFloat(data.getFloat64(i * 8, true));
    }
  }
  return values.map((value, i) => (valid[i] ? value : null));
}

function formatFloat(value) {
  return Number.isInteger(value) ? String(value) : value.toPrecision(6).replace(/\.?0+$/, "");
}

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
      cell.addEventListener("click", () => sortBy(column.name));
      head.appendChild(cell);
    }
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
      }
      row.addEventListener("click", (event) => clickRow(event, i, labelColumn));
    }
    root.replaceChildren(table);
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
  model.on("change:order_by", draw);
  model.on("change:descending", draw);
  draw();
}

export default { render };
