"""A standalone HTML page: headings, text, figures and sortable tables, nothing else.

The page needs no network (inline CSS and JS) and links only relative paths, so that the
result folder can be moved and shared. Every string is escaped: file names, labels and model
metadata show as text, whatever they hold. Click a column head to sort by it; the query
``?sort=<column>&order=asc|desc`` sorts when the page opens (a link to a sorted view). Once
the page has loaded, ``<body>`` carries ``data-images-loaded`` and ``data-images-failed``
(how many of its images could be shown), which tests read.
"""

from __future__ import annotations

import base64
import html
import math
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from fg_onnx.files import write_bytes_atomic

REPORT_NAME = "report.html"


@dataclass(frozen=True)
class Image:
    """An image cell: ``src`` a relative path or ``data`` the encoded bytes (``mime``);
    ``href`` a relative path the image links to."""

    alt: str
    src: str | None = None
    data: bytes | None = None
    mime: str = "image/jpeg"
    href: str | None = None


@dataclass(frozen=True)
class Link:
    """A link cell to a relative path."""

    text: str
    href: str


Cell = str | int | float | bool | None | Image | Link


@dataclass(frozen=True)
class Column:
    """A table column: ``key`` in the rows, its heading, and how its cells sort."""

    key: str
    title: str
    sort: Literal["number", "text", "none"] = "text"
    digits: int = 4
    """Significant digits of float cells."""


def escape(text: object) -> str:
    """Text for HTML content or a quoted attribute."""
    return html.escape(str(text), quote=True)


def relative_url(path: str) -> str:
    """A relative path as a URL (``#``, ``?``, spaces and the like percent-encoded)."""
    if path.startswith(("/", "\\")) or "://" in path or path.startswith(".."):
        raise ValueError(f"reports link relative paths inside their folder only, got {path!r}")
    return urllib.parse.quote(path.replace("\\", "/"))


def _image(cell: Image) -> str:
    if cell.data is not None:
        src = f"data:{cell.mime};base64,{base64.b64encode(cell.data).decode('ascii')}"
    elif cell.src is not None:
        src = relative_url(cell.src)
    else:
        return ""
    tag = f'<img src="{escape(src)}" alt="{escape(cell.alt)}">'
    return f'<a href="{escape(relative_url(cell.href))}">{tag}</a>' if cell.href else tag


def _format(value: float, digits: int) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def _cell(value: Cell, column: Column) -> str:
    """One ``<td>``, with the value it sorts by."""
    key = ""
    if isinstance(value, Image):
        shown = _image(value)
    elif isinstance(value, Link):
        shown = f'<a href="{escape(relative_url(value.href))}">{escape(value.text)}</a>'
        key = value.text
    elif value is None:
        shown = ""
    elif isinstance(value, bool):
        shown = key = "yes" if value else "no"
    elif isinstance(value, float):
        shown, key = _format(value, column.digits), repr(value)
    else:
        key = str(value)
        shown = escape(key)
    attribute = f' data-key="{escape(key)}"' if column.sort != "none" else ""
    return f"<td{attribute}>{shown}</td>"


def table(columns: Sequence[Column], rows: Sequence[Mapping[str, Cell]], *,
          caption: str = "") -> str:
    """A table that sorts by its ``number`` and ``text`` columns."""
    heads = "".join(
        f'<th data-column="{escape(c.key)}" data-sort="{c.sort}"'
        + (' tabindex="0"' if c.sort != "none" else "") + f">{escape(c.title)}</th>"
        for c in columns)
    body = "\n".join("<tr>" + "".join(_cell(row.get(c.key), c) for c in columns) + "</tr>"
                     for row in rows)
    title = f"<caption>{escape(caption)}</caption>" if caption else ""
    return (f'<table class="sortable">{title}<thead><tr>{heads}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody></table>")


def heading(text: str, level: int = 2) -> str:
    """``<h2>`` (or another level)."""
    return f"<h{level}>{escape(text)}</h{level}>"


def paragraph(text: str) -> str:
    """A paragraph of plain text."""
    return f"<p>{escape(text)}</p>"


def links(files: Sequence[str], label: str = "files") -> str:
    """A line of links to files in the folder."""
    items = ", ".join(f'<a href="{escape(relative_url(name))}">{escape(name)}</a>'
                      for name in files)
    return f"<p>{escape(label)}: {items}</p>"


def figure(src: str, caption: str) -> str:
    """An image file in the folder, with a caption."""
    link = escape(relative_url(src))
    return (f'<figure><a href="{link}"><img src="{link}" alt="{escape(caption)}"></a>'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:1em 0}
caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:middle}
th[data-sort=number],th[data-sort=text]{cursor:pointer;background:#f3f3f3;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}
td{max-width:24em;overflow-wrap:anywhere}
td img{height:96px;width:auto;max-width:160px;display:block;image-rendering:auto}
figure img{max-width:100%}
tbody tr:nth-child(even){background:#fafafa}
"""

_SCRIPT = """
(function(){
function key(row,i,numeric){
  var cell=row.cells[i],k=cell?cell.getAttribute('data-key'):'';
  if(k===null||k==='')return null;
  if(numeric){var v=parseFloat(k);return isNaN(v)?null:v;}
  return k.toLowerCase();
}
function sortBy(th,order){
  var table=th.closest('table'),body=table.tBodies[0],i=th.cellIndex;
  var numeric=th.getAttribute('data-sort')==='number',sign=order==='descending'?-1:1;
  var rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){
    var x=key(a,i,numeric),y=key(b,i,numeric);
    if(x===null||y===null)return (x===null)-(y===null);
    return x<y?-sign:x>y?sign:0;
  });
  rows.forEach(function(r){body.appendChild(r);});
  Array.prototype.forEach.call(th.parentNode.cells,function(c){c.removeAttribute('aria-sort');});
  th.setAttribute('aria-sort',order);
}
function toggle(th){
  sortBy(th,th.getAttribute('aria-sort')==='ascending'?'descending':'ascending');
}
document.querySelectorAll('th[data-sort=number],th[data-sort=text]').forEach(function(th){
  th.addEventListener('click',function(){toggle(th);});
  th.addEventListener('keydown',function(e){if(e.key==='Enter')toggle(th);});
});
var query=new URLSearchParams(location.search),wanted=query.get('sort');
if(wanted){
  document.querySelectorAll('th[data-column]').forEach(function(th){
    if(th.getAttribute('data-column')===wanted)
      sortBy(th,query.get('order')==='desc'?'descending':'ascending');
  });
}
window.addEventListener('load',function(){
  var images=document.images,loaded=0;
  for(var i=0;i<images.length;i++)if(images[i].complete&&images[i].naturalWidth>0)loaded++;
  document.body.setAttribute('data-images-loaded',String(loaded));
  document.body.setAttribute('data-images-failed',String(images.length-loaded));
});
})();
"""


def page(title: str, sections: Sequence[str]) -> str:
    """The whole document; ``sections`` are fragments built by this module's functions."""
    body = "\n".join(sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n"
            f"<body>\n<h1>{escape(title)}</h1>\n{body}\n<script>{_SCRIPT}</script>\n"
            "</body></html>\n")


def write_page(path: str | os.PathLike[str], title: str, sections: Sequence[str]) -> None:
    """Writes :func:`page` atomically."""
    write_bytes_atomic(path, page(title, sections).encode("utf-8"))
