// pytest-userflow's HTML report: builds each chart's Vega-Lite spec from the page's data and
// draws it on a canvas (thousands of points stay quick). window.userflowReady settles when
// every chart is drawn; window.userflowViews holds each chart's Vega view by its id.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("userflow-data").textContent);
  var COLORS = {"Passed": "#4c78a8", "Failed": "#e45756", "Excluded": "#9d9d9d",
                "Failed by the gate": "#f58518", "Not Set": "#b279a2"};
  var SHAPES = {"Passed": "circle", "Failed": "cross", "Excluded": "triangle-up",
                "Failed by the gate": "square", "Not Set": "diamond"};

  function spec(c) {
    var units = c.units ? " (" + c.units + ")" : "";
    var x = {field: "run", type: "quantitative", title: "run, oldest to newest",
             scale: {domain: [0.5, data.runs.length + 0.5], nice: false},
             axis: {tickMinStep: 1, format: "d"}};
    // The key and units go in the axis title, which Vega-Lite keeps as text: an encoding's
    // or tooltip's title is pasted into a generated expression, where a quote or a line
    // break in a key would break the chart.
    var y = function (field) {
      return {field: field, type: "quantitative", axis: {title: c.key + units},
              scale: {domain: c.domain, nice: true}};
    };
    var layers = [];
    if (c.bands.length) {
      // Each test's baseline, and the band its noise alone explains, for every run checked.
      var bands = c.bands.map(function (b) {
        return {run: b[0] + 1, test: data.tests[b[1]], low: b[2], baseline: b[3], high: b[4]};
      });
      var bandTip = [{field: "test"}, {field: "baseline", format: ".6~g"},
                     {field: "low", format: ".6~g"}, {field: "high", format: ".6~g"}];
      layers.push({data: {name: "bands", values: bands},
        mark: {type: "rule", color: "#54a24b", opacity: 0.35, strokeWidth: 10, clip: true},
        encoding: {x: x, y: y("low"), y2: {field: "high"}, tooltip: bandTip}});
      layers.push({data: {values: bands},
        mark: {type: "tick", orient: "horizontal", color: "#2e7d32", thickness: 2, size: 14,
               clip: true},
        encoding: {x: x, y: y("baseline"), tooltip: bandTip}});
    }
    // One median line per test and device: never one line across unlike tests.
    var medians = c.medians.map(function (m) {
      return {run: m[0] + 1, median: m[1], line: data.tests[m[2]]};
    });
    layers.push({data: {values: medians},
      mark: {type: "line", color: "#222", strokeWidth: 1.5, clip: true},
      encoding: {x: x, y: y("median"), detail: {field: "line", type: "nominal"},
                 tooltip: [{field: "line", title: "test"}, {field: "run"},
                           {field: "median", format: ".6~g"}]}});
    var present = {};
    var points = c.points.map(function (p) {
      var run = data.runs[p[0]];
      var status = data.statusNames[p[3]];
      present[status] = true;
      return {run: p[0] + 1, id: run.id, time: run.time, commit: run.commit,
              test: data.tests[p[1]], value: p[2], units: c.units, status: status};
    });
    var statuses = data.statusNames.filter(function (s) { return present[s]; });
    layers.push({data: {name: "points", values: points},
      mark: {type: "point", filled: true, size: 36, opacity: 0.75, clip: true},
      encoding: {x: x, y: y("value"),
        color: {field: "status", type: "nominal", title: "status",
                scale: {domain: statuses, range: statuses.map(function (s) { return COLORS[s]; })}},
        shape: {field: "status", type: "nominal",
                scale: {domain: statuses, range: statuses.map(function (s) { return SHAPES[s]; })}},
        tooltip: [{field: "id", title: "run"}, {field: "time"}, {field: "commit"},
                  {field: "test"}, {field: "value", format: ".6~g"}]
          .concat(c.units ? [{field: "units"}] : [], [{field: "status"}])}});
    // The budget lines near the values (the page names the far ones under the chart).
    var limits = c.limits.map(function (l) { return {limit: l[0], budget: l[1]}; });
    if (limits.length) {
      layers.push({data: {name: "limits", values: limits},
        mark: {type: "rule", color: "#c0392b", strokeDash: [6, 4], strokeWidth: 1.5},
        encoding: {y: y("limit"), tooltip: [{field: "budget"}]}});
    }
    if (c.changes.length) {
      var changes = c.changes.map(function (ch) { return {run: ch[0] + 0.5, change: ch[1]}; });
      layers.push({data: {values: changes},
        mark: {type: "rule", color: "#f58518", strokeWidth: 2},
        encoding: {x: x, tooltip: [{field: "change"}]}});
    }
    return {width: "container", height: 220, layer: layers,
            config: {legend: {orient: "right"}, view: {stroke: "#ddd"}}};
  }

  window.userflowViews = {};
  window.userflowReady = Promise.all(data.charts.map(function (c) {
    return vegaEmbed("#" + c.id + "-plot", spec(c), {renderer: "canvas", actions: false})
      .then(function (result) { window.userflowViews[c.id] = result.view; });
  }));
})();
