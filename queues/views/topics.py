"""The topics page (pgmq 1.11+): the bindings, and where a routing key would go."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from queues import forms
from queues.pgmq import has_topics
from queues.selectors import topics


@require_GET
def topics_page(request: HttpRequest) -> HttpResponse:
    if not has_topics():
        raise Http404("This database's pgmq has no topics: topic bindings and routing keys came with pgmq 1.11.")
    # Asked only once a key is given: the page opens on the bindings alone.
    form = forms.RoutingKeyForm(request.GET) if "key" in request.GET else forms.RoutingKeyForm()
    routes = None
    if form.is_bound and form.is_valid():
        try:
            routes = topics.routes(form.cleaned_data["key"])
        except topics.RoutingKeyRefused as refusal:
            form.add_error("key", f"pgmq refuses this routing key: {refusal}")
    context = {"form": form, "bindings": topics.bindings(), "routes": routes}
    return render(request, "queues/topics.html", context, status=400 if form.errors else 200)
