"""A bulk job's page (its progress, live) and its cancellation."""

from __future__ import annotations

from django.contrib import messages as flash
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from queues import jobs
from queues.shortcuts import get_job_or_404, jobs_seen, operator_required, partial_or_page


@require_GET
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_job_or_404(job_id)
    jobs_seen(request, [job])
    return partial_or_page(
        request, "queues/audit/job.html", {"job-live": "queues/audit/_job_progress.html"}, {"job": job}
    )


@require_POST
@operator_required("cancel_job")
def cancel_job(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_job_or_404(job_id)
    jobs.cancel(job, user=request.user)
    flash.info(
        request, f"Job {job.pk} is cancelled." if job.finished else f"Job {job.pk} stops after its current batch."
    )
    return redirect(reverse("job", args=[job.pk]))
