from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("queues.urls")),
]

# Under /api/ every error is JSON too (queues/errors.py); elsewhere Django's pages.
handler400 = "queues.errors.bad_request"
handler403 = "queues.errors.permission_denied"
handler404 = "queues.errors.page_not_found"
handler500 = "queues.errors.server_error"
