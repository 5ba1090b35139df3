"""API clients and roles (a Django app, label ``access``): hashed API tokens, the role of a caller,
the ``HasRole`` permission every app's API uses, and the staff groups' model permissions. Its
table keeps the name it was created with (``deletion_apitoken``)."""
