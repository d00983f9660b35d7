/* django_jobs admin: live updates of the job list, the job page and the overview.
 *
 * Every few seconds (data-interval) while the tab is visible and the switch is on, asks the
 * page's JSON view (data-url) for what changed, and puts it in place:
 *   - {"jobs": [{"id", "state", "buttons", "fields": {name: html}}], "gone": [id]}: the
 *     cells named .field-<name> of each job's row (the list) or of the job page, where a
 *     change of "buttons" (state and enabled) offers a reload for the new buttons;
 *   - {"sections": {element id: html}}: whole parts of the overview.
 * The HTML comes from the admin's own templates and display functions, escaped there.
 * The switch is remembered in localStorage; polling stops while the tab is hidden.
 * No library, no build step.
 */
(function () {
    "use strict";

    var STORAGE_KEY = "django_jobs.live";

    function remembered() {
        try {
            return window.localStorage.getItem(STORAGE_KEY) !== "off";
        } catch (e) {
            return true;  // storage refused (private mode): on, as by default
        }
    }

    function remember(on) {
        try {
            window.localStorage.setItem(STORAGE_KEY, on ? "on" : "off");
        } catch (e) {
            /* not remembered, still applied */
        }
    }

    function pad(n) {
        return (n < 10 ? "0" : "") + n;
    }

    function clock(date) {
        return pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
    }

    function setCells(container, fields) {
        Object.keys(fields).forEach(function (name) {
            container.querySelectorAll(".field-" + name).forEach(function (cell) {
                var target = cell.querySelector(".readonly") || cell;
                if (target.innerHTML !== fields[name]) {
                    target.innerHTML = fields[name];
                    cell.classList.remove("djj-changed");
                    void cell.offsetWidth;  // restart the highlight's animation
                    cell.classList.add("djj-changed");
                }
            });
        });
    }

    function start(box) {
        var url = box.getAttribute("data-url");
        var interval = (parseInt(box.getAttribute("data-interval"), 10) || 5) * 1000;
        var toggle = box.querySelector(".djj-live-switch");
        var status = box.querySelector(".djj-live-status");
        var changed = box.querySelector(".djj-live-changed");
        var initialState = box.getAttribute("data-state");
        var ids = (box.getAttribute("data-ids") || "").split(",").filter(Boolean);
        var rows = document.querySelectorAll("#result_list tbody tr");
        if (ids.length) {
            url += (url.indexOf("?") < 0 ? "?" : "&") + "ids=" + ids.join(",");
        }
        var timer = null;
        var busy = false;
        var updates = 0;

        function containerOf(id) {
            if (initialState !== null) {
                return document.getElementById("content-main");
            }
            var index = ids.indexOf(String(id));
            return index >= 0 ? rows[index] : null;
        }

        function apply(data) {
            (data.jobs || []).forEach(function (job) {
                var container = containerOf(job.id);
                if (!container) {
                    return;
                }
                setCells(container, job.fields || {});
                if (initialState !== null && changed && job.buttons !== initialState) {
                    changed.hidden = false;
                }
            });
            (data.gone || []).forEach(function (id) {
                var container = containerOf(id);
                if (container) {
                    container.classList.add("djj-gone");
                }
            });
            var sections = data.sections || {};
            Object.keys(sections).forEach(function (id) {
                var element = document.getElementById(id);
                if (element) {
                    element.innerHTML = sections[id];
                }
            });
        }

        function stop() {
            if (timer !== null) {
                window.clearTimeout(timer);
                timer = null;
            }
        }

        function plan() {
            stop();
            if (toggle.checked && !document.hidden) {
                timer = window.setTimeout(poll, interval);
            }
        }

        function poll() {
            timer = null;
            if (busy || !toggle.checked || document.hidden) {
                return;
            }
            busy = true;
            window.fetch(url, {
                credentials: "same-origin",
                headers: {"Accept": "application/json"},
                cache: "no-store"
            }).then(function (response) {
                return response.json().catch(function () {
                    return {error: String(response.status)};
                }).then(function (data) {
                    if (!response.ok) {
                        throw new Error(data.error || String(response.status));
                    }
                    return data;
                });
            }).then(function (data) {
                if (!toggle.checked) {
                    return;  // switched off while the answer was on its way
                }
                apply(data);
                updates += 1;
                box.setAttribute("data-updates", String(updates));
                if (initialState !== null && (data.gone || []).length) {
                    status.textContent = box.getAttribute("data-text-gone");
                } else {
                    status.textContent = box.getAttribute("data-text-updated") + " " + clock(new Date());
                }
            }).catch(function (error) {
                status.textContent = box.getAttribute("data-text-failed") + " " + error.message;
            }).then(function () {
                busy = false;
                plan();
            });
        }

        toggle.checked = remembered();
        toggle.addEventListener("change", function () {
            remember(toggle.checked);
            box.classList.toggle("djj-live-off", !toggle.checked);
            if (toggle.checked) {
                poll();
            } else {
                stop();
                status.textContent = "";
            }
        });
        document.addEventListener("visibilitychange", function () {
            if (document.hidden) {
                stop();
                if (toggle.checked) {
                    status.textContent = box.getAttribute("data-text-hidden");
                }
            } else if (toggle.checked) {
                poll();  // catch up at once, then every interval again
            }
        });
        box.classList.toggle("djj-live-off", !toggle.checked);
        plan();
    }

    function init() {
        document.querySelectorAll(".djj-live[data-url]").forEach(start);
    }

    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", init);
    } else {
        init();
    }
}());
