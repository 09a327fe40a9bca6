// The label table's front end: draws one page sent by the kernel and reports
// header clicks (sort) and row clicks (selection). All querying happens in the
// kernel; the page arrives in the format of _wire.py, decoded by _wire.js (which
// the kernel places before this file).

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
